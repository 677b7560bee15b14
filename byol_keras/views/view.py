"""One BYOL augmentation view as a Keras layer: `BYOLView` (crop, flip, colour jitter, grayscale, blur, solarize,
normalise), one column of the paper's Table 6.

Images enter as uint8 (or float in [0, 255]) batches `(batch, height, width, channels)` and leave as float32,
normalised with the ImageNet mean and standard deviation (on the [0, 1] scale), as the paper does after
augmenting. The maths live beside it: `geometry` (crop boxes, resizes), `colour`, `blur`; the random numbers in
`randomness`.
"""

import functools
import math

import keras
from keras import ops

from byol_keras.preprocessing import center_crop_resize, normalize
from byol_keras.validation import check_bool, check_number, check_pair, check_positive_int, check_seed
from byol_keras.views.blur import default_blur_kernel_size, gaussian_blur
from byol_keras.views.colour import JITTER_STYLES, brightness_contrast, color_jitter, grayscale, select, solarize
from byol_keras.views.geometry import (
    TORCHVISION_CROP_ATTEMPTS,
    interpolation_matrix,
    official_crop_window,
    separable_transform,
    torchvision_crop_window,
)
from byol_keras.views.randomness import Columns, executing_eagerly

# Everything below is per image: every image in a batch draws its own crop, flip, jitter parameters and order,
# and its own apply decisions. Random draws (`BYOLView.sample_transform`) are kept apart from the deterministic
# maths (`BYOLView.apply_transform` and the pure functions it calls), so that a test can read the decisions and a
# faster path can reuse either half.

# Index of each colour-jitter operation in `jitter_order`.
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
# Attempts at drawing a crop that fits in the image before torchvision's fallback (`crop_style="torchvision"`).
CROP_MAX_ATTEMPTS = TORCHVISION_CROP_ATTEMPTS
# How the crop box is drawn (`BYOLView(crop_style=...)`).
CROP_STYLES = ("torchvision", "official")


@keras.saving.register_keras_serializable(package="byol_keras")
class BYOLView(keras.layers.Layer):
    """One BYOL augmentation view: crop, flip, colour jitter, grayscale, blur, solarize, normalise.

    Implements one column of the paper's Table 6, in the official order: random resized crop
    (bicubic) with horizontal flip; colour jitter with probability `jitter_prob`; grayscale with
    probability `grayscale_prob`; Gaussian blur with probability `blur_prob`; solarization with
    probability `solarize_prob`; then ImageNet normalisation (`normalize`). Every image draws its
    own crop, flip, jitter parameters and order, and its own apply decision for every stage.

    The crop follows `crop_style`: torchvision's `RandomResizedCrop` by default, or the official code's
    `_decode_and_random_crop`; either way it is resized by a per-image separable matrix product; the colour jitter follows `jitter_style`; the blur draws one sigma per image. Where and
    why this departs from KerasCV's and Keras' layers: `docs/design.md` ("Why BYOLView is not a stack of
    KerasCV layers").

    Random draws come from a `keras.random.SeedGenerator(seed)`: two views built with the same seed
    give the same outputs for the same sequence of calls. The layer works eagerly, inside
    `tf.function` (also with `jit_compile=True`) and as a `tf.data` map over batches; with a parallel
    `map` the order in which batches consume the generator, hence reproducibility, is not guaranteed.
    `augment` and `augment_crops` also take a `draw` (`keyed_draw(key)`): stateless draws, the same for
    the same key in every run, which is how `pretrain_dataset` makes its views.

    Args:
        image_size: int > 0, side of the square output.
        crop_area: (min, max) fraction of the image area covered by the crop, in (0, 1].
            Defaults to `(0.08, 1.0)`.
        crop_aspect_ratio: (min, max) crop width / height, > 0. Defaults to `(3/4, 4/3)`.
        crop_style: how a crop box is drawn; both draw the area fraction uniformly in `crop_area` and the
            aspect ratio log-uniformly in `crop_aspect_ratio`. `"torchvision"` (`RandomResizedCrop`,
            which lightly and solo-learn use): `get_params`, up to `CROP_MAX_ATTEMPTS` draws with width and
            height rounded to whole pixels until one fits, else torchvision's fallback (the centred image with
            its aspect clamped to the range). `"official"` (the official BYOL code's
            `_decode_and_random_crop`, deepmind-research `byol/utils/dataset.py`): one draw, its width and
            height rounded to whole pixels and clipped to the image's. Both draw on the image's own height and
            width, whole-pixel offsets (`crop_window`). Defaults to `"torchvision"`.
        interpolation: `"bicubic"` or `"bilinear"`. Defaults to `"bicubic"`.
        flip_prob: probability of a horizontal flip. Defaults to 0.5.
        jitter_prob: probability of the colour jitter. Defaults to 0.8.
        brightness: max additive brightness delta on the [0, 1] scale, in [0, 1]. Defaults to 0.4.
        contrast: contrast factor drawn in `[1 - contrast, 1 + contrast]`, contrast in [0, 1].
            Defaults to 0.4.
        saturation: saturation factor drawn in `[1 - saturation, 1 + saturation]`, in [0, 1].
            Defaults to 0.2.
        hue: max hue rotation in turns, in [0, 0.5]. Defaults to 0.1.
        jitter_style: `"tensorflow"` (the official code's colour maths, as above) or
            `"torchvision"` (`torchvision.transforms.ColorJitter`'s: brightness multiplies by a
            factor in `[1 - brightness, 1 + brightness]`, contrast blends towards the mean grayscale
            value, saturation blends with the grayscale image; see `color_jitter`). The draws are
            the same either way. Defaults to `"tensorflow"`.
        grayscale_prob: probability of grayscale conversion. Defaults to 0.2.
        blur_prob: probability of the Gaussian blur. Defaults to 1.0 (view 1).
        blur_sigma: (min, max) blur standard deviation in pixels, > 0. Defaults to `(0.1, 2.0)`.
        blur_kernel_size: odd int > 0, or `None` for `default_blur_kernel_size(image_size)`
            (23 at 224 px). Defaults to `None`.
        solarize_prob: probability of solarization. Defaults to 0.0 (view 1).
        solarize_threshold: pixels at or above this fraction of the range are inverted, in [0, 1].
            Defaults to 0.5.
        seed: int or `None`, seed of the layer's random draws. Defaults to `None`.
        channels: int > 0, the images' channels. Other than 3 (grayscale kept as one channel, 4-band tiles), the
            jitter is brightness and contrast alone (`brightness_contrast`) and `saturation`, `hue` and
            `grayscale_prob` must be 0. Defaults to 3.
        jit_compile: bool. When the layer runs inside a graph (a `tf.data` map, a `tf.function`),
            compile `apply_transform` with XLA, which fuses the colour jitter's hundred-odd
            elementwise passes over the batch into a few loops: several times the images per second of the
            plain graph on CPU (docs/results.md). The random draws (`sample_transform`) stay
            outside, so a seeded stream is the same either way; the maths agree to float rounding.
            Eager calls always run op by op (no compilation per new shape). Defaults to True.
        **kwargs: `keras.layers.Layer` arguments (`name`, ...). The layer computes in float32.

    Returns (when called):
        float32 `(batch, image_size, image_size, 3)`, ImageNet-normalised. `call(images,
        training=False)` skips the augmentation: resize the shorter side, centre crop, normalise.

    Example:

    >>> view = BYOLView(image_size=32, blur_prob=0.0, seed=0)
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 40, 40, 3), dtype="uint8")
    >>> tuple(view(images).shape)
    (4, 32, 32, 3)
    """

    def __init__(
        self,
        image_size,
        crop_area=(0.08, 1.0),
        crop_aspect_ratio=(3.0 / 4.0, 4.0 / 3.0),
        interpolation="bicubic",
        flip_prob=0.5,
        jitter_prob=0.8,
        brightness=0.4,
        contrast=0.4,
        saturation=0.2,
        hue=0.1,
        jitter_style="tensorflow",
        grayscale_prob=0.2,
        blur_prob=1.0,
        blur_sigma=(0.1, 2.0),
        blur_kernel_size=None,
        solarize_prob=0.0,
        solarize_threshold=0.5,
        seed=None,
        jit_compile=True,
        crop_style="torchvision",
        channels=3,
        **kwargs,
    ):
        # Augmentation maths stay in float32 even under a mixed-precision policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        image_size = check_positive_int("image_size", image_size)
        if interpolation not in ("bilinear", "bicubic"):
            raise ValueError(
                "`interpolation` must be 'bilinear' or 'bicubic'. "
                f"Received: interpolation={interpolation!r}"
            )
        if jitter_style not in JITTER_STYLES:
            raise ValueError(
                f"`jitter_style` must be one of {JITTER_STYLES}. Received: jitter_style={jitter_style!r}"
            )
        if crop_style not in CROP_STYLES:
            raise ValueError(f"`crop_style` must be one of {CROP_STYLES}. Received: crop_style={crop_style!r}")
        if blur_kernel_size is None:
            blur_kernel_size = default_blur_kernel_size(image_size)
        blur_kernel_size = check_positive_int("blur_kernel_size", blur_kernel_size)
        if blur_kernel_size % 2 == 0:
            raise ValueError(f"`blur_kernel_size` must be odd. Received: blur_kernel_size={blur_kernel_size!r}")
        seed = check_seed("seed", seed)
        check_bool("jit_compile", jit_compile)
        self.image_size = image_size
        self.jit_compile = jit_compile
        self.crop_area = check_pair("crop_area", crop_area, 0.0, 1.0, low_open=True)
        self.crop_aspect_ratio = check_pair(
            "crop_aspect_ratio", crop_aspect_ratio, 0.0, None, low_open=True
        )
        self.crop_style = crop_style
        self.interpolation = interpolation
        self.flip_prob = check_number("flip_prob", flip_prob, 0, 1)
        self.jitter_prob = check_number("jitter_prob", jitter_prob, 0, 1)
        self.brightness = check_number("brightness", brightness, 0, 1)
        self.contrast = check_number("contrast", contrast, 0, 1)
        self.saturation = check_number("saturation", saturation, 0, 1)
        self.hue = check_number("hue", hue, 0, 0.5)
        self.jitter_style = jitter_style
        self.grayscale_prob = check_number("grayscale_prob", grayscale_prob, 0, 1)
        self.blur_prob = check_number("blur_prob", blur_prob, 0, 1)
        self.blur_sigma = check_pair("blur_sigma", blur_sigma, 0.0, None, low_open=True)
        self.blur_kernel_size = blur_kernel_size
        self.solarize_prob = check_number("solarize_prob", solarize_prob, 0, 1)
        self.solarize_threshold = check_number("solarize_threshold", solarize_threshold, 0, 1)
        self.seed = seed
        self.channels = check_positive_int("channels", channels)
        if channels != 3:
            # Saturation, hue and grayscale are RGB notions: views of one channel (or of bands) go without them.
            for name in ("saturation", "hue", "grayscale_prob"):
                if getattr(self, name) != 0:
                    raise ValueError(
                        f"`{name}` must be 0 for images of {channels} channel(s): it needs RGB (channels=3). "
                        f"Received: {name}={getattr(self, name)}, channels={channels}"
                    )

        self.seed_generator = keras.random.SeedGenerator(seed)
        # All state (the seed generator) exists now: nothing to build.
        self.built = True

    def _uniform(self, shape, low=0.0, high=1.0, draw=None):
        if draw is None:
            return keras.random.uniform(shape, low, high, seed=self.seed_generator)
        return low + (high - low) * draw(shape)

    def _bernoulli(self, batch_size, prob, draw=None):
        return self._uniform((batch_size,), draw=draw) < prob

    @property
    def draws_per_image(self):
        """How many uniforms `sample_transform` draws for each image: the crop's (`crop_uniforms`), then 14."""
        crop = 4 if self.crop_style == "official" else 2 * CROP_MAX_ATTEMPTS + 2
        return crop + 14

    def sample_transform(self, images, draw=None):
        """Draw every random choice of this view for a batch, one draw per image and stage.

        All of them come from one `(batch, draws_per_image)` block of uniforms, one random-number operation
        (each operation is a loop of its own once compiled: drawn one by one, a keyed view compiled ~3x slower
        under XLA and ran ~3x slower), whose columns are handed out in a fixed order. Always draws the same
        block whatever the probabilities, so the random stream (and a seeded run) does not depend on which
        stages are switched on.

        Args:
            images: `(batch, height, width, 3)`; only its shape is used.
            draw: callable `shape -> uniform float32 tensor in [0, 1)` (e.g. `keyed_draw(key)`), or None
                for this view's seed generator. Defaults to None.

        Returns:
            dict of tensors, all with leading axis `batch`:
            `crop_box` `(batch, 4)` float (y1, x1, y2, x2) as fractions of height and width;
            `flip` bool; `jitter` bool; `brightness`, `contrast`, `saturation`, `hue` float;
            `jitter_order` `(batch, 4)` int32 (indices into `JITTER_OPS`); `grayscale` bool;
            `blur` bool; `blur_sigma` float; `solarize` bool.
        """
        shape = ops.shape(images)
        batch_size = shape[0]
        height = ops.cast(shape[1], "float32")
        width = ops.cast(shape[2], "float32")
        draw = Columns(self._uniform((batch_size, self.draws_per_image), draw=draw))
        y1, x1, box_h, box_w = self.crop_window(height, width, self.crop_uniforms(batch_size, draw))
        crop_box = ops.stack([y1 / height, x1 / width, (y1 + box_h) / height, (x1 + box_w) / width], axis=-1)
        transform = {
            "crop_box": crop_box,
            "flip": self._bernoulli(batch_size, self.flip_prob, draw),
            "jitter": self._bernoulli(batch_size, self.jitter_prob, draw),
            "brightness": self._uniform((batch_size,), -self.brightness, self.brightness, draw),
            "contrast": self._uniform((batch_size,), 1.0 - self.contrast, 1.0 + self.contrast, draw),
            "saturation": self._uniform(
                (batch_size,), 1.0 - self.saturation, 1.0 + self.saturation, draw
            ),
            "hue": self._uniform((batch_size,), -self.hue, self.hue, draw),
            # argsort of i.i.d. uniforms is a uniformly random permutation per image.
            "jitter_order": ops.cast(ops.argsort(self._uniform((batch_size, 4), draw=draw), axis=-1), "int32"),
            "grayscale": self._bernoulli(batch_size, self.grayscale_prob, draw),
            "blur": self._bernoulli(batch_size, self.blur_prob, draw),
            "blur_sigma": self._uniform((batch_size,), *self.blur_sigma, draw),
            "solarize": self._bernoulli(batch_size, self.solarize_prob, draw),
        }
        draw.check_used_up()
        return transform

    def crop_uniforms(self, batch_size, draw=None):
        """The uniform draws one crop window per image needs, in `crop_window`'s order.

        Args:
            batch_size: int or scalar tensor, the number of windows.
            draw: callable `shape -> uniform float32 tensor in [0, 1)`, or None for this view's seeded
                generator. The per-image pipeline passes a stateless draw here.

        Returns:
            A tuple of tensors with leading axis `batch_size`, as `crop_window` takes them.
        """
        draw = draw or self._uniform
        if self.crop_style == "official":
            return tuple(draw((batch_size,)) for _ in range(4))
        attempts = (batch_size, CROP_MAX_ATTEMPTS)
        return draw(attempts), draw(attempts), draw((batch_size,)), draw((batch_size,))

    def crop_window(self, height, width, uniforms):
        """Crop windows `(y1, x1, crop_height, crop_width)` in whole pixels of an image of the given size.

        Drawn on the image's own height and width, as both sources of `crop_style` do:
        `views.geometry.torchvision_crop_window` or `views.geometry.official_crop_window`.

        Args:
            height, width: float scalars (or tensors broadcastable to the draws' leading axis).
            uniforms: the draws from `crop_uniforms`.

        Returns:
            Four float32 tensors, one value per window.
        """
        if self.crop_style == "official":
            return official_crop_window(uniforms, height, width, self.crop_area, self.crop_aspect_ratio)
        return torchvision_crop_window(uniforms, height, width, self.crop_area, self.crop_aspect_ratio)

    def apply_transform(self, images, transform):
        """Apply drawn choices to a batch: deterministic given `transform`.

        The crop window is cut from each image and resized (`interpolation`) by a per-image matrix
        product, with the flip folded in; then `apply_after_crop`'s stages. Stages whose probability is 0
        are skipped outright (their decisions are all False anyway).

        Args:
            images: `(batch, height, width, 3)` uint8 or float in [0, 255].
            transform: dict from `sample_transform` (or built by hand, same keys and shapes).

        Returns:
            float32 `(batch, image_size, image_size, 3)` in [0, 255], before normalisation.
        """
        images = ops.cast(images, "float32")
        shape = ops.shape(images)
        height, width = shape[1], shape[2]
        box = ops.cast(transform["crop_box"], "float32")
        height_f = ops.cast(height, "float32")
        width_f = ops.cast(width, "float32")
        rows = interpolation_matrix(
            box[:, 0] * height_f, (box[:, 2] - box[:, 0]) * height_f, height,
            self.image_size, self.interpolation,
        )
        cols = interpolation_matrix(
            box[:, 1] * width_f, (box[:, 3] - box[:, 1]) * width_f, width,
            self.image_size, self.interpolation,
        )
        # A horizontal flip is the column map read backwards: folded in, it costs nothing.
        cols = ops.where(transform["flip"][:, None, None], ops.flip(cols, axis=1), cols)
        # Bicubic overshoots near edges; the colour maths below expect the valid range.
        planar = ops.clip(ops.transpose(separable_transform(images, rows, cols), (0, 3, 1, 2)) / 255.0, 0.0, 1.0)
        return 255.0 * ops.transpose(self._colour_blur_solarize(planar, transform), (0, 2, 3, 1))

    def apply_after_crop(self, crops, transform):
        """The stages after the crop (flip, colour jitter, grayscale, blur, solarize) on cropped images.

        For crops already cut and resized to `image_size` (`byol_keras.data.pretrain_dataset` cuts them
        per image, on the whole photo); `transform["crop_box"]` is not read.

        Args:
            crops: `(batch, image_size, image_size, 3)` uint8 or float in [0, 255].
            transform: dict from `sample_transform`.

        Returns:
            float32 `(batch, image_size, image_size, 3)` in [0, 255], before normalisation.
        """
        planar = ops.transpose(ops.cast(crops, "float32"), (0, 3, 1, 2)) / 255.0
        planar = ops.where(transform["flip"][:, None, None, None], ops.flip(planar, axis=3), planar)
        return 255.0 * ops.transpose(self._colour_blur_solarize(planar, transform), (0, 2, 3, 1))

    def _colour_blur_solarize(self, images, transform):
        """Jitter, grayscale, blur, solarize on channels-first `(batch, 3, size, size)` images in [0, 1].

        Channels first, each channel is a contiguous plane, which XLA's CPU loops vectorise better than
        interleaved RGB (figures in `docs/design.md`, "The stages after the crop run channels first"). The maths are the layout-independent
        functions of `views.colour`, the same as KerasCV's `Grayscale` and `Solarization` layers (tested equal).
        """
        if self.jitter_prob > 0.0 and self.channels != 3:
            jittered = brightness_contrast(
                images, transform["brightness"], transform["contrast"], transform["jitter_order"],
                style=self.jitter_style, channel_axis=1,
            )
            images = select(transform["jitter"], jittered, images)
        elif self.jitter_prob > 0.0:
            jittered = color_jitter(
                images,
                transform["brightness"],
                transform["contrast"],
                transform["saturation"],
                transform["hue"],
                transform["jitter_order"],
                style=self.jitter_style,
                channel_axis=1,
            )
            images = select(transform["jitter"], jittered, images)
        if self.grayscale_prob > 0.0 and self.channels == 3:
            images = select(transform["grayscale"], grayscale(images, channel_axis=1), images)
        if self.blur_prob > 0.0 and self.blur_kernel_size > 1:
            images = self._blur(images, transform["blur"], transform["blur_sigma"])
        if self.solarize_prob > 0.0:
            images = select(transform["solarize"], solarize(images, self.solarize_threshold), images)
        return ops.clip(images, 0.0, 1.0)

    def _blur(self, images, chosen, sigma):
        """The Gaussian blur of the `chosen` images of a channels-first batch (the others unchanged).

        A rare blur (view 2's 10 %) is computed on a gathered subset of `rare_subset_size` images, the bound
        with the least expected work; when a batch chooses more, the whole batch is blurred instead
        (`ops.cond`), so the result never depends on the bound.
        """

        def blur(x, s):
            return gaussian_blur(x, s, self.blur_kernel_size)

        def everything():
            return select(chosen, blur(images, sigma), images)

        batch_size = images.shape[0]
        if batch_size is None or self.blur_prob >= 1.0:
            return everything()
        subset_size = rare_subset_size(batch_size, self.blur_prob)
        if subset_size >= batch_size:
            return everything()

        def subset():
            # The chosen images first (in batch order), then the others: the first `subset_size` hold them all.
            positions = ops.arange(batch_size, dtype="int32")
            order = ops.argsort(ops.where(chosen, positions, positions + batch_size))[:subset_size]
            picked = ops.take(images, order, axis=0)
            blurred = select(ops.take(chosen, order, axis=0), blur(picked, ops.take(sigma, order, axis=0)), picked)
            return ops.scatter_update(images, ops.expand_dims(order, -1), blurred)

        count = ops.sum(ops.cast(chosen, "int32"))
        return ops.cond(count <= subset_size, subset, everything)

    def call(self, images, training=True):
        if not training:
            return normalize(center_crop_resize(images, self.image_size, crop_fraction=1.0))
        return self.augment(images)

    def augment(self, images, draw=None):
        """This view of whole images, what `call` does in training: every stage, then the normalisation.

        Args:
            images: uint8 or float `(batch, height, width, 3)` in [0, 255].
            draw: callable for `sample_transform`, or None for the seed generator. Defaults to None.

        Returns:
            float32 `(batch, image_size, image_size, 3)`, ImageNet-normalised.
        """
        self._check_channels(images)
        transform = self.sample_transform(images, draw)
        if self.jit_compile and not executing_eagerly():
            return _xla_apply()(self, "_view", images, transform)
        return self._view(images, transform)

    def augment_crops(self, crops, draw=None):
        """This view of crops already cut and resized: flip, colour, grayscale, blur, solarize, normalise.

        The random draws are `sample_transform`'s (one per image and stage); the crop it draws is unused.
        Compiled with XLA inside a graph when `jit_compile`, as `call`.

        Args:
            crops: uint8 or float `(batch, image_size, image_size, 3)` in [0, 255].
            draw: callable for `sample_transform`, or None for the seed generator. Defaults to None.

        Returns:
            float32 `(batch, image_size, image_size, 3)`, ImageNet-normalised.
        """
        if tuple(crops.shape[1:3]) not in ((self.image_size, self.image_size), (None, None)):
            raise ValueError(
                f"`crops` must be {self.image_size}x{self.image_size} images (this view's image_size). "
                f"Received: crops of shape {tuple(crops.shape)}"
            )
        self._check_channels(crops)
        transform = self.sample_transform(crops, draw)
        if self.jit_compile and not executing_eagerly():
            return _xla_apply()(self, "_view_of_crops", crops, transform)
        return self._view_of_crops(crops, transform)

    def _check_channels(self, images):
        channels = images.shape[-1]
        if channels is not None and channels != self.channels:
            raise ValueError(
                f"`images` must have {self.channels} channel(s), this view's `channels`; for grayscale images "
                f"kept as one channel use BYOLAugment(..., channels=1). Received: images of shape {tuple(images.shape)}"
            )

    # Normalised inside the compiled function, so that XLA folds it into the last pass over the batch.
    def _view(self, images, transform):
        return normalize(self.apply_transform(images, transform))

    def _view_of_crops(self, crops, transform):
        return normalize(self.apply_after_crop(crops, transform))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, self.channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_size": self.image_size,
                "crop_area": self.crop_area,
                "crop_aspect_ratio": self.crop_aspect_ratio,
                "crop_style": self.crop_style,
                "interpolation": self.interpolation,
                "flip_prob": self.flip_prob,
                "jitter_prob": self.jitter_prob,
                "brightness": self.brightness,
                "contrast": self.contrast,
                "saturation": self.saturation,
                "hue": self.hue,
                "jitter_style": self.jitter_style,
                "grayscale_prob": self.grayscale_prob,
                "blur_prob": self.blur_prob,
                "blur_sigma": self.blur_sigma,
                "blur_kernel_size": self.blur_kernel_size,
                "solarize_prob": self.solarize_prob,
                "solarize_threshold": self.solarize_threshold,
                "seed": self.seed,
                "jit_compile": self.jit_compile,
                "channels": self.channels,
            }
        )
        return config


@functools.cache
def rare_subset_size(batch_size, probability):
    """How many images to gather for a stage each image takes with `probability`: the least expected work.

    Gathering `s` images costs `s` blurs, and a batch that chooses more than `s` (a binomial tail) falls back
    to blurring all `batch_size`; `s` minimises `s + batch_size * P(count > s)`. For view 2's 10 %: 6 of a
    chunk of 32 (a fallback once in 28 chunks), 37 of 256.

    Args:
        batch_size: int, positive.
        probability: float in [0, 1].

    Returns:
        int in [0, batch_size].
    """
    if probability <= 0.0 or probability >= 1.0:
        return 0 if probability <= 0.0 else batch_size
    log_p, log_q, log_n = math.log(probability), math.log1p(-probability), math.lgamma(batch_size + 1)
    tail, best, best_cost = 1.0, batch_size, float(batch_size)  # tail: P(count > s), from s = -1 up
    for size in range(batch_size + 1):
        # The binomial's pmf in logs: batches of thousands overflow math.comb's float conversion.
        tail -= math.exp(log_n - math.lgamma(size + 1) - math.lgamma(batch_size - size + 1)
                         + size * log_p + (batch_size - size) * log_q)
        cost = size + batch_size * max(tail, 0.0)
        if cost < best_cost:
            best, best_cost = size, cost
    return best


@functools.cache
def _xla_apply():
    """`apply(view, method_name, images, transform)` as one XLA-compiled function, shared by every view.

    The view and the name of its method (`"_view"` or `"_view_of_crops"`) are Python
    arguments: each view instance, method and input shape gets its own trace. Kept at module level rather than as a layer
    attribute, so that no `tf.function` hangs off the layer for SavedModel export to trace.
    """
    import tensorflow as tf

    def apply(view, method_name, images, transform):
        return getattr(view, method_name)(images, transform)

    return tf.function(apply, jit_compile=True)


VIEW_ARGS = (
    "crop_area", "crop_aspect_ratio", "crop_style", "interpolation", "flip_prob", "jitter_prob", "brightness",
    "contrast", "saturation", "hue", "jitter_style", "grayscale_prob", "blur_prob", "blur_sigma",
    "blur_kernel_size", "solarize_prob", "solarize_threshold", "jit_compile", "channels",
)
