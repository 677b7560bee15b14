"""The two asymmetric BYOL views, and the evaluation-time preprocessing.

Images enter as uint8 (or float in [0, 255]) batches `(batch, height, width, 3)` and leave as float32,
normalised with the ImageNet mean and standard deviation (on the [0, 1] scale), as the paper does after
augmenting.
"""

from keras import ops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images):
    """Scale images from [0, 255] to [0, 1] and standardise with the ImageNet mean and std.

    Args:
        images: `(batch, height, width, 3)` uint8 or float tensor with values in [0, 255].

    Returns:
        float32 tensor of the same shape.
    """
    images = ops.cast(images, "float32") / 255.0
    mean = ops.convert_to_tensor(IMAGENET_MEAN, dtype="float32")
    std = ops.convert_to_tensor(IMAGENET_STD, dtype="float32")
    return (images - mean) / std


def center_crop_resize(images, image_size, crop_fraction=0.875):
    """Evaluation preprocessing: resize the shorter side to `image_size / crop_fraction`, crop the centre.

    The paper's test transform: "resize to 256 pixels along the shorter side, then centre crop 224"
    (224 / 256 = 0.875). With `crop_fraction=1.0` the shorter side is resized to `image_size` and the
    centre square is kept. Works on a single image `(h, w, 3)` or on a batch of equally sized images.

    Args:
        images: uint8 or float tensor `(batch, h, w, 3)` or `(h, w, 3)`, values in [0, 255].
        image_size: int, side of the square output.
        crop_fraction: float in (0, 1]. Defaults to 0.875.

    Returns:
        float32 tensor `(batch, image_size, image_size, 3)` (or without batch axis), values in [0, 255].
    """
    import tensorflow as tf

    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(
            f"`crop_fraction` must be in (0, 1]. Received: crop_fraction={crop_fraction}"
        )
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
