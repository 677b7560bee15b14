"""Evaluation preprocessing, shared by the views, the data, the evaluation and the export.

- `normalize`: [0, 255] to [0, 1], then the ImageNet mean and standard deviation (`channel_stats` for other
  channel counts), as the paper does after augmenting and at test time.
- `center_crop_resize`: the paper's test transform (resize the shorter side, crop the centre). It calls
  TensorFlow (`tf.image.resize` to a size computed from each image's own shape at run time); data, evaluation
  and export run it in `tf.data` or a SavedModel, where TensorFlow is there anyway.
"""

from keras import ops

from byol_keras.validation import check_number

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def channel_stats(channels):
    """The mean and standard deviation (on the [0, 1] scale) `normalize` uses for images of `channels` channels.

    Three channels: ImageNet's per-channel values. Any other count (grayscale, 4-band tiles): every channel gets
    the average of ImageNet's three, `(0.449, 0.226)`, the usual choice for grayscale.

    Args:
        channels: int > 0.

    Returns:
        `(mean, std)`, two tuples of `channels` floats.
    """
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    mean, std = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    return (mean,) * channels, (std,) * channels


def normalize(images):
    """Scale images from [0, 255] to [0, 1] and standardise with the ImageNet mean and std (`channel_stats`).

    Args:
        images: `(batch, height, width, channels)` uint8 or float tensor with values in [0, 255]; channels 3
            (RGB), or any other count with a known static size (1 for grayscale).

    Returns:
        float32 tensor of the same shape.
    """
    images = ops.cast(images, "float32") / 255.0
    channels = images.shape[-1]
    mean, std = channel_stats(3 if channels is None else channels)
    mean = ops.convert_to_tensor(mean, dtype="float32")
    std = ops.convert_to_tensor(std, dtype="float32")
    return (images - mean) / std


def default_crop_fraction(image_size):
    """The test transform's centre-crop fraction for an image size: 0.875 from 96 px up, else 1.0.

    The one rule for the crop fraction: every function that takes `crop_fraction=None` applies it, and a
    pretraining run records its result in `config.json`, which export and evaluation read back.
    The paper's 224 / 256 crop at ImageNet resolution; at CIFAR's 32 px the usual practice (solo-learn,
    lightly) is no crop at all, since an eighth of a tiny image is too much to lose.

    Args:
        image_size: int.

    Returns:
        float.
    """
    return 0.875 if image_size >= 96 else 1.0


def resolve_crop_fraction(crop_fraction, image_size):
    """`crop_fraction` checked, or `default_crop_fraction(image_size)` for None.

    Args:
        crop_fraction: float in (0, 1], or None.
        image_size: int, the side of the evaluation images.

    Returns:
        float in (0, 1].
    """
    if crop_fraction is None:
        return default_crop_fraction(image_size)
    return check_number("crop_fraction", crop_fraction, 0, 1, low_open=True)


def center_crop_resize(images, image_size, crop_fraction=None):
    """Evaluation preprocessing: resize the shorter side to `image_size / crop_fraction`, crop the centre.

    The paper's test transform: "resize to 256 pixels along the shorter side, then centre crop 224"
    (224 / 256 = 0.875). With `crop_fraction=1.0` the shorter side is resized to `image_size` and the
    centre square is kept. Works on a single image `(h, w, 3)` or on a batch of equally sized images.

    Args:
        images: uint8 or float tensor `(batch, h, w, 3)` or `(h, w, 3)`, values in [0, 255].
        image_size: int, side of the square output.
        crop_fraction: float in (0, 1] or None. Defaults to None: `default_crop_fraction(image_size)`.

    Returns:
        float32 tensor `(batch, image_size, image_size, 3)` (or without batch axis), values in [0, 255].
    """
    import tensorflow as tf

    crop_fraction = resolve_crop_fraction(crop_fraction, image_size)
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    resize_to = tf.cast(tf.math.ceil(image_size / crop_fraction), tf.float32)
    scale = resize_to / tf.cast(tf.minimum(height, width), tf.float32)
    new_h = tf.maximum(tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32), image_size)
    new_w = tf.maximum(tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32), image_size)
    images = tf.image.resize(images, tf.stack([new_h, new_w]), method="bicubic", antialias=True)
    top = (new_h - image_size) // 2
    left = (new_w - image_size) // 2
    images = images[..., top : top + image_size, left : left + image_size, :]
    return tf.clip_by_value(images, 0.0, 255.0)
