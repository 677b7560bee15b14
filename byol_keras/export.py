"""SavedModel export for TF Serving: encoded image bytes in, embeddings out.

The export carries the whole evaluation transform inside the graph, so a client sends the JPEG/PNG/BMP/GIF
file it has and gets back the vector the encoder produces for it. Decoding, RGB conversion, the paper's
test-time resize and centre crop ("resize to 256 pixels along the shorter side, then centre crop 224")
and the ImageNet normalisation all run in TensorFlow ops, and the loaded SavedModel needs neither Keras
nor `byol_keras`.

Signatures written by `export_encoder`:

| name              | input                                  | outputs                                          |
|-------------------|----------------------------------------|--------------------------------------------------|
| `serving_default` | `image_bytes`: tf.string `[None]`      | `embedding`, `embedding_normalized`: f32 `[None, D]` |
| `embed_pixels`    | `images`: uint8 `[None, None, None, C]` | `embedding`, `embedding_normalized`: f32 `[None, D]` |
| `project`         | `image_bytes`: tf.string `[None]`      | `projection`, `projection_normalized`: f32 `[None, P]` |

`project` exists only when a projector is exported (a BYOL model with `include_projector=True`). C is the
encoder's channels: 3, or 1 for an encoder of grayscale images, whose byte signatures take any image file and use
its luma (a grayscale file: its own pixels).

Images are decoded by `byol_keras.decoding.decode_image`, the decoder training and evaluation use (JPEGs with
the accurate IDCT, as Pillow), so a photo gives the same pixels here as in training. What the byte signatures
refuse, with `InvalidArgumentError` (TF Serving's `INVALID_ARGUMENT`) naming the image (`image_bytes[i]`) and
the reason, before any pixel is decoded: empty input, formats other than JPEG/PNG/GIF/BMP, palette BMPs (their
colours would be wrong), and images whose header declares more than `max_pixels` pixels (a GIF: all its
frames), so that a decompression bomb costs neither memory nor time. A request is decoded one image at a time
and encoded `SERVING_CHUNK` images at a time (`embed_pixels` too), so its working memory does not grow with its
number of images.

Example:

```python
export_encoder(byol_model, "saved_models/cifar10/1", image_size=32)
served = tf.saved_model.load("saved_models/cifar10/1")
out = served.signatures["serving_default"](image_bytes=tf.constant([jpeg_bytes]))
out["embedding"]  # (1, 512) float32
```
"""

import errno
import json
import os
import shutil
import uuid

import keras

from byol_keras.preprocessing import center_crop_resize, resolve_crop_fraction
from byol_keras.preprocessing import normalize
from byol_keras.decoding import DEFAULT_MAX_PIXELS
from byol_keras.decoding import check_channels
from byol_keras.decoding import check_max_pixels
from byol_keras.decoding import decode_image
from byol_keras.durable import as_write_error, atomic_write_json, fsync_dir, writing
from byol_keras.losses import l2_normalize  # the served `*_normalized` outputs are the loss's normalisation
from byol_keras.validation import check_positive_int

SERVING_DEFAULT = "serving_default"
EMBED_PIXELS = "embed_pixels"
PROJECT = "project"

# Where the `.keras` copy and the export description go by default. `assets.extra/` is the SavedModel
# folder reserved for files that travel with the model but are not part of the graph; TF Serving reads
# only `tf_serving_warmup_requests` from it. Keeping the `.keras` inside the version folder (rather than
# beside it in `saved_models/NAME/`) means every version keeps its own Keras copy and nothing is
# overwritten when a new version is exported.
ASSETS_EXTRA = "assets.extra"
KERAS_FILENAME = "encoder.keras"
DESCRIPTION_FILENAME = "export.json"

# Images a byte signature preprocesses and encodes at once: a request of any length runs in chunks of this many,
# so its working memory (the normalised crops, the encoder's activations) is that of this many images. 32 keeps
# a CPU's or a GPU's batch efficiency; the embeddings themselves (4 bytes x D per image) are the only part that
# grows with the request.
SERVING_CHUNK = 32


def decode_images(image_bytes, max_pixels=DEFAULT_MAX_PIXELS, channels=3):
    """Decode a batch of encoded images to a ragged list of RGB (or grayscale) uint8 images, as the served graph does.

    Helper for the reference path in tests and clients: the served graph's decoder
    (`byol_keras.decoding.decode_image` without Python: 3 channels, grayscale replicated, alpha dropped, a GIF's
    first frame, the accurate IDCT, the same refusals; with `channels=1`, the luma).

    Args:
        image_bytes: tf.string tensor `(batch,)` or a list of `bytes`.
        max_pixels: int, the pixel limit. Defaults to `DEFAULT_MAX_PIXELS`.
        channels: 3 (RGB) or 1 (grayscale). Defaults to 3.

    Returns:
        list of uint8 tensors `(height_i, width_i, channels)`.
    """
    import tensorflow as tf

    return [
        decode_image(encoded, max_pixels, python=False, name=f"image_bytes[{i}]", channels=channels)
        for i, encoded in enumerate(tf.unstack(tf.convert_to_tensor(image_bytes, tf.string)))
    ]


def preprocess_image_bytes(image_bytes, image_size, crop_fraction=None, max_pixels=DEFAULT_MAX_PIXELS, first_index=0,
                           channels=3):
    """Decode, resize, centre-crop and normalise a batch of encoded images of possibly different sizes.

    Each image is checked, decoded and cropped on its own (`tf.map_fn`, one image at a time, so that the memory
    of decoding is one image's however long the request), because images in one request may differ in size;
    the result is what `byol_keras.preprocessing.center_crop_resize` followed by `normalize` gives for each image
    `byol_keras.decoding.decode_image` decodes.

    Args:
        image_bytes: tf.string tensor `(batch,)` of JPEG, PNG, BMP or GIF files.
        image_size: int, side of the square crop the encoder sees.
        crop_fraction: float in (0, 1], crop side over resized shorter side, or None. Defaults to None:
            `default_crop_fraction(image_size)`.
        max_pixels: int, images declaring more pixels are refused before decoding. Defaults to
            `DEFAULT_MAX_PIXELS`.
        first_index: int or int32 scalar, the request index of `image_bytes[0]`, for error messages
            (`image_bytes[i]`). Defaults to 0.
        channels: 3 (RGB) or 1 (grayscale: each decoded image's ITU-R 601 luma, `byol_keras.decoding.to_channels`,
            which gives a grayscale file its own pixels back: what training decodes). Defaults to 3.

    Returns:
        float32 tensor `(batch, image_size, image_size, channels)`, normalised (`normalize`). Raises
        `InvalidArgumentError` for an image it refuses (see the module docstring).
    """
    import tensorflow as tf

    def one_image(encoded_index):
        encoded, index = encoded_index
        name = tf.strings.join(["image_bytes[", tf.strings.as_string(index), "]"])
        image = decode_image(encoded, max_pixels, python=False, name=name, channels=channels)
        image = center_crop_resize(image, image_size, crop_fraction)
        # The crop offsets are computed at run time, so the static shape is unknown; pin it (and check
        # it) so the stacked batch has the shape the encoder was built for.
        return tf.ensure_shape(image, (image_size, image_size, channels))

    indices = first_index + tf.range(tf.shape(image_bytes)[0])
    images = tf.map_fn(
        one_image,
        (image_bytes, indices),
        fn_output_signature=tf.TensorSpec((image_size, image_size, channels), tf.float32),
        parallel_iterations=1,
    )
    return normalize(images)


def _in_chunks(images, fn, dim):
    """`fn(chunk of images, index of its first image)` over chunks of `SERVING_CHUNK`, concatenated.

    `images` is a request's batch (encoded bytes or pixels); `fn` returns float32 `(chunk, dim)`; an empty
    request gives `(0, dim)`.
    """
    import tensorflow as tf

    count = tf.shape(images)[0]
    chunks = (count + SERVING_CHUNK - 1) // SERVING_CHUNK
    outputs = tf.TensorArray(tf.float32, size=chunks, element_shape=tf.TensorShape([None, dim]), infer_shape=False)

    def step(i, outputs):
        start = i * SERVING_CHUNK
        return i + 1, outputs.write(i, fn(images[start:start + SERVING_CHUNK], start))

    _, outputs = tf.while_loop(lambda i, _: i < chunks, step, (tf.constant(0), outputs), parallel_iterations=1)
    return tf.ensure_shape(outputs.concat(), (None, dim))


def preprocess_pixels(images, image_size, crop_fraction=None, channels=3):
    """Resize, centre-crop and normalise a batch of equally sized uint8 images.

    Args:
        images: uint8 tensor `(batch, height, width, channels)`, values in [0, 255].
        image_size: int, side of the square crop the encoder sees.
        crop_fraction: float in (0, 1] or None. Defaults to None: `default_crop_fraction(image_size)`.
        channels: int, the images' channels (the encoder's). Defaults to 3.

    Returns:
        float32 tensor `(batch, image_size, image_size, channels)`, normalised (`normalize`).
    """
    import tensorflow as tf

    images = center_crop_resize(images, image_size, crop_fraction)
    images = tf.ensure_shape(images, (None, image_size, image_size, channels))
    return normalize(images)


def _unpack(model_or_encoder, include_projector):
    """Return `(encoder, projector or None)` for a BYOL model or a plain encoder."""
    if isinstance(model_or_encoder, keras.Model) and hasattr(model_or_encoder, "encoder"):
        encoder = model_or_encoder.encoder
        projector = getattr(model_or_encoder, "projector", None) if include_projector else None
    elif isinstance(model_or_encoder, keras.Model):
        encoder, projector = model_or_encoder, None
    else:
        raise TypeError(
            "`model_or_encoder` must be a BYOL model (a keras.Model with `.encoder` and `.projector`) "
            "or a keras.Model encoder mapping normalised images (batch, size, size, 3) to "
            f"(batch, dim). Received: model_or_encoder={model_or_encoder!r} "
            f"of type {type(model_or_encoder).__name__}"
        )
    if not isinstance(encoder, keras.Model):
        raise TypeError(
            "`model_or_encoder.encoder` must be a keras.Model. "
            f"Received: encoder={encoder!r} of type {type(encoder).__name__}"
        )
    if not encoder.built:
        raise ValueError(
            "The encoder must be built (called once or created with an Input) before export. "
            f"Received: encoder={encoder.name!r} with built=False"
        )
    return encoder, projector


def _check_input_size(encoder, image_size, channels=None):
    """A functional encoder with a fixed input size must be exported at that size; returns its channels.

    RGB (3) or grayscale (1): the byte signatures decode files to one of the two. `channels` (a run's, or None)
    must be the encoder's own when its input records them. A subclassed encoder, with no recorded input, is
    taken as `channels`, else RGB (the trace will tell).
    """
    try:
        input_shape = tuple(encoder.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        return channels or 3  # Subclassed encoder: no recorded input, the trace will tell.
    if len(input_shape) != 4 or input_shape[-1] not in (1, 3, None):
        raise ValueError(
            "The encoder must take images (batch, height, width, 3) or grayscale images (batch, height, width, 1): "
            "the export decodes image files to RGB or grayscale. "
            f"Received: encoder input shape {input_shape}"
        )
    for side in input_shape[1:3]:
        if side is not None and side != image_size:
            raise ValueError(
                f"`image_size` must match the encoder's fixed input size {input_shape[1:3]}. "
                f"Received: image_size={image_size}"
            )
    if channels is not None and input_shape[-1] not in (None, channels):
        raise ValueError(
            f"`channels` must match the encoder's input channels ({input_shape[-1]}). Received: channels={channels}"
        )
    return input_shape[-1] or channels or 3


def _as_float32(x, what):
    """Cast a model output to float32 (mixed precision yields float16/bfloat16) and check its rank."""
    import tensorflow as tf

    if x.shape.rank != 2:
        raise ValueError(
            f"The {what} must return (batch, dim) features. Received: output shape {tuple(x.shape)}"
        )
    return tf.cast(x, tf.float32)


def _write_keras_copy(encoder, keras_path):
    os.makedirs(os.path.dirname(os.path.abspath(keras_path)), exist_ok=True)
    encoder.save(keras_path)


def export_encoder(
    model_or_encoder,
    export_dir,
    image_size,
    crop_fraction=None,
    include_projector=True,
    keras_path=None,
    verbose=False,
    max_pixels=DEFAULT_MAX_PIXELS,
    channels=None,
):
    """Write a TF Serving SavedModel that maps encoded images to encoder embeddings.

    Uses `keras.export.ExportArchive`: the encoder (and projector) weights are tracked, and each
    signature is a `tf.function` that runs the evaluation transform (decode → RGB → resize the shorter
    side to `image_size / crop_fraction` → centre crop `image_size` → ImageNet normalisation) and the
    encoder in inference mode (BatchNorm uses its moving statistics). Outputs are float32 even when the
    model computes in float16/bfloat16 (mixed precision), and the graph works for models whose
    variables were created under a `tf.distribute` strategy.

    The encoder is also saved as a `.keras` file, by default inside the SavedModel at
    `<export_dir>/assets.extra/encoder.keras` (the SavedModel folder for files that are not part of
    the graph), so each exported version carries its own Keras copy. `assets.extra/export.json`
    describes the export (sizes, signatures, versions) and is what this function returns.

    Args:
        model_or_encoder: a BYOL model (a `keras.Model` with `.encoder` and `.projector`) or a built
            `keras.Model` encoder mapping normalised float32 images `(batch, size, size, 3)` (or `1`: grayscale)
            to `(batch, dim)` features.
        export_dir: str or path-like, the SavedModel folder to create (e.g.
            `saved_models/NAME/1`). Must not exist or be empty.
        image_size: int, the side the encoder sees (32 for CIFAR-10, 224 for ImageNet).
        crop_fraction: float in (0, 1], centre-crop side over resized shorter side (a run's is its config's
            "crop_fraction"), or None. Defaults to None: `default_crop_fraction(image_size)` (the paper's 224/256
            from 96 px up).
        include_projector: bool, add the `project` signature (BYOL's projection space) when
            `model_or_encoder` has a projector; ignored for a plain encoder. Defaults to True.
        keras_path: str or path-like, where to save the encoder as `.keras`. Defaults to
            `<export_dir>/assets.extra/encoder.keras`.
        verbose: bool, print the endpoints Keras writes. Defaults to False.
        max_pixels: int, the byte signatures refuse an image whose header declares more pixels (a GIF: all
            its frames), before decoding it. Defaults to `DEFAULT_MAX_PIXELS` (89,478,485, Pillow's
            decompression-bomb threshold: 268 MB decoded, about 2.0 GiB at the preprocessing's peak).
        channels: 3, 1 or None: what the signatures decode files to and the pixels they take (RGB or grayscale).
            None: the encoder's input channels (3 when it records none); a run passes its config's, which must
            be the encoder's. Defaults to None.

    Returns:
        dict, the export description: `export_dir`, `keras_path`, `image_size`, `channels`, `crop_fraction`,
        `max_pixels`, `embedding_dim`, `projection_dim` (None without projector), `signatures`,
        `compute_dtype`, `tensorflow_version`, `keras_version`.
    """
    import tensorflow as tf

    encoder, projector = _unpack(model_or_encoder, include_projector)
    image_size = check_positive_int("image_size", image_size)
    crop_fraction = resolve_crop_fraction(crop_fraction, image_size)
    max_pixels = check_max_pixels(max_pixels)
    export_dir = os.fspath(export_dir)
    if os.path.exists(export_dir) and os.listdir(export_dir):
        raise FileExistsError(
            f"`export_dir` already exists and is not empty; refusing to overwrite it. "
            f"Received: export_dir={export_dir!r}"
        )
    channels = _check_input_size(encoder, image_size, None if channels is None else check_channels(channels))
    keras_path = os.fspath(keras_path) if keras_path is not None else os.path.join(
        export_dir, ASSETS_EXTRA, KERAS_FILENAME
    )

    def features_of(images):
        # training=False: BatchNorm must use its moving statistics, or an image's embedding would
        # depend on the other images of its request.
        return _as_float32(encoder(images, training=False), "encoder")

    def projection_of(images):
        return _as_float32(projector(encoder(images, training=False), training=False), "projector")

    def from_bytes(model_fn):
        def chunk_fn(chunk, first_index):
            return model_fn(preprocess_image_bytes(chunk, image_size, crop_fraction, max_pixels, first_index, channels))

        return chunk_fn

    # The output widths, known before the chunked loop is built (its accumulator needs them).
    pixel_spec = tf.TensorSpec((None, image_size, image_size, channels), tf.float32)
    embedding_dim = int(tf.function(features_of).get_concrete_function(pixel_spec).structured_outputs.shape[-1])

    def serving_default(image_bytes):
        features = _in_chunks(image_bytes, from_bytes(features_of), embedding_dim)
        return {"embedding": features, "embedding_normalized": l2_normalize(features)}

    def embed_pixels(images):
        def chunk_fn(chunk, first_index):
            return features_of(preprocess_pixels(chunk, image_size, crop_fraction, channels))

        features = _in_chunks(images, chunk_fn, embedding_dim)
        return {"embedding": features, "embedding_normalized": l2_normalize(features)}

    def project(image_bytes):
        projection = _in_chunks(image_bytes, from_bytes(projection_of), projection_dim)
        return {"projection": projection, "projection_normalized": l2_normalize(projection)}

    archive = keras.export.ExportArchive()
    archive.track(encoder)
    # Named "serving_default" explicitly (instead of relying on write_out's alias of the first endpoint)
    # so that it is also an attribute of the loaded object, which `keras.layers.TFSMLayer` looks up first,
    # and not only an entry of `.signatures`.
    serving_fn = archive.add_endpoint(
        SERVING_DEFAULT, serving_default, [tf.TensorSpec((None,), tf.string, name="image_bytes")]
    )
    archive.add_endpoint(
        EMBED_PIXELS, embed_pixels, [tf.TensorSpec((None, None, None, channels), tf.uint8, name="images")]
    )
    signatures = [SERVING_DEFAULT, EMBED_PIXELS]
    projection_dim = None
    if projector is not None:
        archive.track(projector)
        projection_dim = int(tf.function(projection_of).get_concrete_function(pixel_spec).structured_outputs.shape[-1])
        archive.add_endpoint(PROJECT, project, [tf.TensorSpec((None,), tf.string, name="image_bytes")])
        signatures.append(PROJECT)
    # Tracing here (before anything is written) surfaces a wrong encoder as an error, not a broken export.
    serving_fn.get_concrete_function()
    archive.write_out(export_dir, verbose=verbose)

    _write_keras_copy(encoder, keras_path)
    description = {
        "export_dir": export_dir,
        "keras_path": keras_path,
        "image_size": image_size,
        "channels": channels,
        "crop_fraction": crop_fraction,
        "max_pixels": max_pixels,
        "embedding_dim": embedding_dim,
        "projection_dim": projection_dim,
        "signatures": signatures,
        "compute_dtype": encoder.dtype_policy.compute_dtype,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    os.makedirs(os.path.join(export_dir, ASSETS_EXTRA), exist_ok=True)
    with open(os.path.join(export_dir, ASSETS_EXTRA, DESCRIPTION_FILENAME), "w") as f:
        json.dump(description, f, indent=2)
    return description


def existing_versions(model_base_path):
    """The integer version folders TF Serving would see under `model_base_path`, sorted.

    Args:
        model_base_path: str or path-like, e.g. `saved_models/NAME`. May not exist.

    Returns:
        sorted list of int.
    """
    model_base_path = os.fspath(model_base_path)
    if not os.path.isdir(model_base_path):
        return []
    return sorted(
        int(name)
        for name in os.listdir(model_base_path)
        if name.isdigit() and os.path.isdir(os.path.join(model_base_path, name))
    )


def next_version(model_base_path):
    """One more than the highest existing version folder, or 1 when there is none.

    TF Serving serves the highest version by default, so a new export must be numbered above all
    existing ones (filling a gap would publish an export that is never served).

    Args:
        model_base_path: str or path-like, e.g. `saved_models/NAME`.

    Returns:
        int >= 1.
    """
    versions = existing_versions(model_base_path)
    return versions[-1] + 1 if versions else 1


def export_version(model_or_encoder, model_base_path, image_size, version=None, **kwargs):
    """Export into the TF Serving layout `model_base_path/VERSION/`, never overwriting a version.

    The SavedModel is written to a hidden staging folder beside the version and renamed into place
    only when complete: TF Serving polls `model_base_path` and would otherwise try to load a
    half-written version.

    Args:
        model_or_encoder: see `export_encoder`.
        model_base_path: str or path-like, e.g. `saved_models/NAME`; created if missing.
        image_size: int, see `export_encoder`.
        version: int >= 1 or None, the version folder. Defaults to `next_version(model_base_path)`.
        **kwargs: passed to `export_encoder` (`crop_fraction`, `include_projector`, `verbose`, `max_pixels`,
            `channels`).

    Returns:
        dict, the export description of `export_encoder` plus `version`, with `export_dir` and
        `keras_path` pointing at the final folder.

    Raises:
        FileExistsError: if `model_base_path/VERSION` already exists.
    """
    if "keras_path" in kwargs or "export_dir" in kwargs:
        raise TypeError(
            "`export_version` places the SavedModel and its `.keras` copy itself. "
            f"Received: {sorted(k for k in kwargs if k in ('keras_path', 'export_dir'))}"
        )
    model_base_path = os.fspath(model_base_path)
    chosen = version is not None
    version = check_positive_int("version", version) if chosen else next_version(model_base_path)
    final_dir = os.path.join(model_base_path, str(version))
    if chosen and os.path.exists(final_dir):
        raise FileExistsError(
            f"Version {version} already exists at {final_dir!r}; refusing to overwrite it. "
            f"Pass another `version` or omit it to use the next free one ({next_version(model_base_path)})."
        )
    with writing(model_base_path):
        os.makedirs(model_base_path, exist_ok=True)
    # Not a number, so TF Serving ignores it while it is being written.
    staging_dir = os.path.join(model_base_path, f".staging-{uuid.uuid4().hex[:12]}")
    try:
        with writing(staging_dir):
            description = export_encoder(model_or_encoder, staging_dir, image_size, **kwargs)
        while True:
            # The rename claims the number: it fails when another export holds it (a complete version folder is
            # never empty), and then the next free number is taken, unless the caller chose this one.
            try:
                os.rename(staging_dir, final_dir)
                break
            except OSError as error:
                taken = error.errno in (errno.EEXIST, errno.ENOTEMPTY)
                if taken and chosen:
                    raise FileExistsError(
                        f"Version {version} appeared at {final_dir!r} during the export; refusing to overwrite it."
                    ) from None
                if not taken:
                    raise as_write_error(final_dir, error) from None
                version = max(version + 1, next_version(model_base_path))
                final_dir = os.path.join(model_base_path, str(version))
        fsync_dir(model_base_path)
    finally:
        if os.path.exists(staging_dir):
            shutil.rmtree(staging_dir)
    description.update(
        export_dir=final_dir,
        keras_path=os.path.join(final_dir, ASSETS_EXTRA, KERAS_FILENAME),
        version=version,
    )
    atomic_write_json(os.path.join(final_dir, ASSETS_EXTRA, DESCRIPTION_FILENAME), description, indent=2)
    return description
