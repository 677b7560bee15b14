"""The two asymmetric BYOL views as Keras layers: `BYOLAugment` (both views), `BYOLView` (one view) and
`view_configs` (the paper's Table 6 as constructor arguments).

Images enter as uint8 (or float in [0, 255]) batches `(batch, height, width, 3)` and leave as float32,
normalised with the ImageNet mean and standard deviation (on the [0, 1] scale), as the paper does after
augmenting. The maths (and the evaluation preprocessing `normalize`, `center_crop_resize`) live in
`byol_keras.image_ops` and are importable from here too.
"""

import functools
import itertools
import math

import keras
from keras import ops

from byol_keras.validation import check_bool, check_number, check_pair, check_positive_int, check_seed
from byol_keras.image_ops import (  # the maths the views are made of; importable from here as before
    GRAYSCALE_WEIGHTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    JITTER_STYLES,
    _blend,
    _keys_cubic,
    _luma,
    _select,
    adjust_brightness,
    adjust_brightness_torchvision,
    adjust_contrast,
    adjust_contrast_torchvision,
    adjust_saturation_hue,
    adjust_saturation_torchvision,
    brightness_contrast,
    center_crop_resize,
    channel_stats,
    color_jitter,
    default_blur_kernel_size,
    gaussian_blur,
    gaussian_blur_matrix,
    interpolation_matrix,
    normalize,
    grayscale,
    official_crop_window,
    separable_transform,
    solarize,
    torchvision_crop_window,
    TORCHVISION_CROP_ATTEMPTS,
)


@keras.saving.register_keras_serializable(package="byol_keras")
class BYOLAugment(keras.layers.Layer):
    """Both BYOL views of a batch: `(view1, view2) = augment(images)`.

    Holds two `BYOLView`s built from `view_configs(image_size, blur, **overrides)`. With a seed, view 1
    uses `seed` and view 2 `seed + 1`, so the two views draw independently yet reproducibly.

    Args:
        image_size: int > 0, side of the augmented images.
        blur: bool, `False` drops the blur from both views (32 px). Defaults to `True`.
        seed: int or `None`. Defaults to `None`.
        **overrides: `BYOLView` arguments shared by both views (see `view_configs`; `channels=1` makes
            grayscale views, without saturation, hue or grayscale conversion), plus
            `keras.layers.Layer` arguments (`name`, ...).

    Returns (when called):
        A tuple of two float32 `(batch, image_size, image_size, 3)` ImageNet-normalised tensors.

    Example:

    >>> augment = BYOLAugment(32, blur=False, seed=0)
    >>> images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype="uint8")
    >>> dataset = tf.data.Dataset.from_tensor_slices(images).batch(4).map(augment)
    >>> view1, view2 = next(iter(dataset))
    >>> tuple(view1.shape), tuple(view2.shape)
    ((4, 32, 32, 3), (4, 32, 32, 3))
    """

    def __init__(self, image_size, blur=True, seed=None, **overrides):
        layer_kwargs = {k: overrides.pop(k) for k in list(overrides) if k not in _VIEW_ARGS}
        layer_kwargs.setdefault("dtype", "float32")
        super().__init__(**layer_kwargs)
        check_seed("seed", seed)
        self.image_size = image_size
        self.blur = blur
        self.seed = seed
        self.overrides = dict(overrides)
        first, second = view_configs(image_size, blur=blur, **overrides)
        self.view1 = BYOLView(**first, seed=seed, name="view1")
        self.view2 = BYOLView(**second, seed=None if seed is None else seed + 1, name="view2")
        self.built = True

    def call(self, images, training=True):
        return self.view1(images, training=training), self.view2(images, training=training)

    @property
    def views(self):
        """`(view1, view2)`, the two `BYOLView`s."""
        return self.view1, self.view2

    def augment_images(self, images, key):
        """Both views of a batch with every random draw keyed by `key` (`keyed_draw`), not the seed generators.

        The same `key` gives the same views in every run, whatever runs in parallel: `pretrain_dataset` keys
        each batch by its position in the stream, so that a resumed run makes the views an uninterrupted
        run makes. View `i` draws from `stateless_fold_in(key, i)`.

        Args:
            images: uint8 or float `(batch, height, width, 3)` in [0, 255].
            key: int `(2,)` tensor, a stateless random key.

        Returns:
            A tuple of two float32 `(batch, image_size, image_size, 3)` ImageNet-normalised tensors.
        """
        return tuple(view.augment(images, keyed_draw(_fold_in(key, i))) for i, view in enumerate(self.views))

    def augment_crops(self, crops1, crops2, key=None):
        """Both views from crops already cut and resized per view (`BYOLView.augment_crops`).

        `byol_keras.data.pretrain_dataset` cuts each view's window from the whole image (decoding only
        that window of a JPEG) and hands the two batches of crops here, or to the model when the views are
        made on the accelerator (`BYOL(augment=..., augment_on="device")`).

        Args:
            crops1, crops2: uint8 or float `(batch, image_size, image_size, 3)`, view 1's and view 2's crops.
            key: int `(2,)` tensor or None. A key makes every draw stateless, as `augment_images`; None
                draws from the views' seed generators. Defaults to None.

        Returns:
            A tuple of two float32 `(batch, image_size, image_size, 3)` ImageNet-normalised tensors.
        """
        if key is None:
            return self.view1.augment_crops(crops1), self.view2.augment_crops(crops2)
        return tuple(
            view.augment_crops(crops, keyed_draw(_fold_in(key, i)))
            for i, (view, crops) in enumerate(zip(self.views, (crops1, crops2)))
        )

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0], self.image_size, self.image_size, self.view1.channels)
        return shape, shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"image_size": self.image_size, "blur": self.blur, "seed": self.seed, **self.overrides}
        )
        return config


@keras.saving.register_keras_serializable(package="byol_keras")
class LayerViews(keras.layers.Layer):
    """Two views from any Keras 3 or KerasCV preprocessing layers: `(view1, view2) = views(images)`.

    Each view is its layers applied in order to the images (cast to float32, in [0, 255]), clipped to [0, 255]
    and normalised as byol_keras' own views are (`normalize`), so that an encoder sees the same input in
    training, in the kNN monitor and in the export. Random layers draw afresh on every call, so the two views
    differ even when `view2` is `view1`'s layers.

    What a user's own views give up against `BYOLAugment` (the paper's): their draws come from the layers' own
    seed generators, which `pretrain_dataset` cannot key by the batch's position in the stream (a resumed run
    sees other views than an uninterrupted one, and two runs with one seed may differ); their crops are cut
    from the `image_size` square `pretrain_dataset` hands them, not from the whole image; and they run as the
    layers run (KerasCV's, image by image in Python-converted graphs, are several times slower).

    Args:
        view1: a `keras.layers.Layer` or a list of them (Keras 3 core: `RandomFlip`, `RandomColorJitter`,
            `RandomGrayscale`, `RandomGaussianBlur`, `Solarization`, `RandAugment`, ...; KerasCV's layers), each
            taking and returning `(batch, height, width, channels)` images in [0, 255].
        view2: the same for the second view, or None for `view1`'s layers. Defaults to None.
        **kwargs: `keras.layers.Layer` arguments (`name`).

    Returns (when called):
        A tuple of two float32 `(batch, height, width, channels)` normalised tensors.

    Example:

    >>> views = LayerViews([keras.layers.RandomFlip("horizontal", seed=0), keras.layers.RandomGrayscale(0.2, seed=1)])
    >>> view1, view2 = views(np.zeros((2, 8, 8, 3), "uint8"))
    >>> tuple(view1.shape)
    (2, 8, 8, 3)
    """

    def __init__(self, view1, view2=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.view1_layers = _layer_list("view1", view1)
        self.view2_layers = self.view1_layers if view2 is None else _layer_list("view2", view2)
        self._same = view2 is None
        self.built = True

    def _view(self, layers, images):
        x = ops.cast(images, "float32")
        for layer in layers:
            x = ops.cast(layer(x, training=True), "float32")
        return normalize(ops.clip(x, 0.0, 255.0))

    def call(self, images, training=True):
        return self._view(self.view1_layers, images), self._view(self.view2_layers, images)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape), tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["view1"] = [keras.saving.serialize_keras_object(layer) for layer in self.view1_layers]
        config["view2"] = None if self._same else [keras.saving.serialize_keras_object(l) for l in self.view2_layers]
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("view1", "view2"):
            if config.get(key) is not None:
                config[key] = [keras.saving.deserialize_keras_object(layer) for layer in config[key]]
        return cls(**config)


def _layer_list(name, layers):
    layers = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    for layer in layers:
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"`{name}` must be a keras.layers.Layer or a list of them. Received: {name}={layer!r} of type "
                f"{type(layer).__name__}"
            )
    return layers


# --- The BYOL views -------------------------------------------------------------------------------
#
# Paper Table 6 (and the official `utils/augmentations.py`). Everything below is per image: every
# image in a batch draws its own crop, flip, jitter parameters and order, and its own apply decisions.
# Random draws (`BYOLView.sample_transform`) are kept apart from the deterministic maths
# (`BYOLView.apply_transform` and the pure functions it calls), so that a test can read the decisions
# and a faster path can reuse either half.

# The per-view probabilities of Table 6; everything else is shared by the two views.
PAPER_VIEW_PROBS = (
    {"blur_prob": 1.0, "solarize_prob": 0.0},
    {"blur_prob": 0.1, "solarize_prob": 0.2},
)
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
            plain graph on CPU (`benchmarks/README.md`). The random draws (`sample_transform`) stay
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
        draw = _Columns(self._uniform((batch_size, self.draws_per_image), draw=draw))
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
        `image_ops.torchvision_crop_window` or `image_ops.official_crop_window`.

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
        functions of `image_ops`, the same as KerasCV's `Grayscale` and `Solarization` layers (tested equal).
        """
        if self.jitter_prob > 0.0 and self.channels != 3:
            jittered = brightness_contrast(
                images, transform["brightness"], transform["contrast"], transform["jitter_order"],
                style=self.jitter_style, channel_axis=1,
            )
            images = _select(transform["jitter"], jittered, images)
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
            images = _select(transform["jitter"], jittered, images)
        if self.grayscale_prob > 0.0 and self.channels == 3:
            images = _select(transform["grayscale"], grayscale(images, channel_axis=1), images)
        if self.blur_prob > 0.0 and self.blur_kernel_size > 1:
            images = self._blur(images, transform["blur"], transform["blur_sigma"])
        if self.solarize_prob > 0.0:
            images = _select(transform["solarize"], solarize(images, self.solarize_threshold), images)
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
            return _select(chosen, blur(images, sigma), images)

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
            blurred = _select(ops.take(chosen, order, axis=0), blur(picked, ops.take(sigma, order, axis=0)), picked)
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
        if self.jit_compile and not _executing_eagerly():
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
        if self.jit_compile and not _executing_eagerly():
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


class _Columns:
    """A `draw(shape)` that hands out the next columns of one `(batch, n)` block of uniforms, in order.

    `shape` is `(batch,)` or `(batch, k)`: one column or the next `k`. `check_used_up` fails unless every
    column was handed out (a stage added to `sample_transform` must be counted in `draws_per_image`).
    """

    def __init__(self, block):
        self.block = block
        self.taken = 0

    def __call__(self, shape):
        width = 1 if len(shape) == 1 else shape[1]
        if len(shape) > 2 or self.taken + width > self.block.shape[1]:
            raise ValueError(f"No {width} columns of shape {tuple(shape)} left in a block of {self.block.shape[1]}")
        columns = self.block[:, self.taken:self.taken + width]
        self.taken += width
        return columns[:, 0] if len(shape) == 1 else columns

    def check_used_up(self):
        if self.taken != self.block.shape[1]:
            raise ValueError(f"{self.taken} of the block's {self.block.shape[1]} columns were drawn")


def _executing_eagerly():
    import tensorflow as tf

    return tf.executing_eagerly()


def _fold_in(key, data):
    import tensorflow as tf

    return tf.random.experimental.stateless_fold_in(key, data)


def keyed_draw(key):
    """A `draw(shape)` of stateless uniforms in [0, 1) from `key`: its first call draws from `key` itself, its
    i-th from `fold_in(key, i)` (`sample_transform` calls it once: each fold is one more random-number
    operation to compile).

    Pass it to `BYOLView.sample_transform` (or `augment`, `augment_crops`, `crop_uniforms`): the draws then
    depend on the key alone, not on a generator's state, so the same key gives the same views in every
    run and in any order of parallel calls.

    Args:
        key: int32 or int64 `(2,)` tensor.

    Returns:
        callable `shape -> float32 tensor of that shape`.
    """
    import tensorflow as tf

    counter = itertools.count()

    def draw(shape):
        index = next(counter)
        return tf.random.stateless_uniform(shape, seed=key if index == 0 else _fold_in(key, index))

    return draw


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


_VIEW_ARGS = (
    "crop_area", "crop_aspect_ratio", "crop_style", "interpolation", "flip_prob", "jitter_prob", "brightness",
    "contrast", "saturation", "hue", "jitter_style", "grayscale_prob", "blur_prob", "blur_sigma",
    "blur_kernel_size", "solarize_prob", "solarize_threshold", "jit_compile", "channels",
)
# What views of images that are not RGB (`channels` other than 3) go without.
_RGB_ONLY = {"saturation": 0.0, "hue": 0.0, "grayscale_prob": 0.0}


def view_configs(image_size, blur=True, **overrides):
    """The constructor arguments of the paper's two views (Table 6), optionally overridden.

    View 1 always blurs and never solarizes; view 2 blurs with probability 0.1 and solarizes with
    probability 0.2. Everything else is shared.

    Args:
        image_size: int, side of the augmented images.
        blur: bool, `False` drops the blur from both views (the usual practice at 32 px, where a
            blur destroys the image). Defaults to `True`.
        **overrides: `BYOLView` arguments (not `image_size` or `seed`), applied to both views.

    Returns:
        `(view1_kwargs, view2_kwargs)`, two dicts of `BYOLView` keyword arguments (without `seed`).

    Example:

    >>> first, second = view_configs(224)
    >>> (first["blur_prob"], first["solarize_prob"], second["blur_prob"], second["solarize_prob"])
    (1.0, 0.0, 0.1, 0.2)
    >>> BYOLView(**first).blur_kernel_size
    23
    """
    unknown = sorted(set(overrides) - set(_VIEW_ARGS))
    if unknown:
        raise TypeError(
            f"Unknown view argument(s) {unknown}; expected some of {list(_VIEW_ARGS)}. "
            f"Received: overrides={overrides}"
        )
    check_bool("blur", blur)
    configs = []
    for probs in PAPER_VIEW_PROBS:
        config = {"image_size": image_size, **probs}
        if overrides.get("channels", 3) != 3:
            config.update(_RGB_ONLY)  # grayscale views: brightness and contrast only
        if not blur:
            config["blur_prob"] = 0.0
        config.update(overrides)
        configs.append(config)
    return tuple(configs)
