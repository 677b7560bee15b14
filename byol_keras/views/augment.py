"""Both BYOL views of a batch as one Keras layer: `BYOLAugment`, the paper's two views (Table 6)."""

import keras

from byol_keras.validation import check_seed
from byol_keras.views.paper import view_configs
from byol_keras.views.randomness import fold_in, keyed_draw
from byol_keras.views.view import VIEW_ARGS, BYOLView


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
        layer_kwargs = {k: overrides.pop(k) for k in list(overrides) if k not in VIEW_ARGS}
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
        return tuple(view.augment(images, keyed_draw(fold_in(key, i))) for i, view in enumerate(self.views))

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
            view.augment_crops(crops, keyed_draw(fold_in(key, i)))
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
