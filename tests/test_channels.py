"""Images of one channel kept as one channel end to end (`--channels 1`), and the RGB default left as it was.

A grayscale folder (PNG and JPEG files of mode 'L', a few classes, two non-square sizes) goes through the command
line's own calls: `byol-pretrain --channels 1` -> the export's byte and pixel signatures -> `byol-linear-eval`,
and a resume with another channel count stops with a message naming the flag.
"""

import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from byol_keras import data
from byol_keras.augment import BYOLAugment
from byol_keras.eval_data import load_arrays
from helpers import pattern, save_image


def _digest(*arrays):
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _rgb_folder(root):
    """RGB PNGs and JPEGs of two non-square sizes in two classes (the per-image path, JPEG windows and whole PNGs)."""
    for i in range(6):
        height, width = (21, 30) if i % 2 else (27, 19)
        extension = ".jpg" if i % 3 else ".png"
        save_image(os.path.join(root, "ab"[i % 2], f"{i}{extension}"), pattern(height, width, offset=17 * i),
                   **({"quality": 90} if extension == ".jpg" else {}))
    return root


# The uint8 pixels an RGB run reads (the crops of both views on the per-image path, JPEG windows and whole PNGs; the
# images of the native-size path; the kNN arrays), hashed on the code from before `channels` existed: the RGB
# default must stay the same, bit for bit.
RGB_GOLDEN = {"per_image": "92aa17f61392add5", "native": "b55cb985ed50a72d", "arrays": "575f0f50449dc541"}


def test_the_rgb_default_reads_the_same_pixels_as_before(tmp_path):
    source = data.load_source(_rgb_folder(str(tmp_path / "rgb")))
    augment = BYOLAugment(16, seed=3, blur=False, jit_compile=False)
    crops = next(iter(data.pretrain_dataset(source, augment, 4, seed=5, repeat=True, views_on="device")))
    digits = data.load_source("digits", split="test", image_size=12)
    native = next(iter(data.pretrain_dataset(digits, augment, 8, seed=5, repeat=True, views_on="device")))
    arrays = load_arrays(source, 16, crop_fraction=0.875)
    got = {"per_image": _digest(*(np.asarray(t) for t in crops)), "native": _digest(*(np.asarray(t) for t in native)),
           "arrays": _digest(*arrays)}
    assert crops[0].shape == (4, 16, 16, 3) and native[0].shape == (8, 12, 12, 3) and arrays[0].shape == (6, 16, 16, 3)
    assert got == RGB_GOLDEN
