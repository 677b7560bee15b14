"""Two views from any Keras 3 or KerasCV preprocessing layers: `LayerViews` (a user's own views)."""

import keras
from keras import ops

from byol_keras.preprocessing import normalize


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
