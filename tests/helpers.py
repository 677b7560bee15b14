"""Values that several test modules share (tests import this module, never each other)."""

# Every stage of a BYOLView off and the crop an exact identity map: the view is then only the resize and
# the normalisation.
ALL_OFF = dict(
    crop_area=(1.0, 1.0),
    crop_aspect_ratio=(1.0, 1.0),
    flip_prob=0.0,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    solarize_prob=0.0,
)
