"""The command-line programs, and what they share: flag types that check their values, and clean errors.

One module per command, each with `main(argv)`: `pretrain` (`byol-pretrain`), `linear_eval`
(`byol-linear-eval`), `finetune` (`byol-finetune`), `export` (`byol-export`). Installed, the commands are on
the PATH; in a clone, `python -m training.pretrain` etc. run the same programs (`training/*.py` are their
thin entry points).

A command-line user gets one line on stderr and exit status 2 (argparse's convention) for a bad flag,
naming the flag and the value given, whether argparse or the library found the problem; a traceback only
with `--debug` or for an error the program did not expect.

The flags are parsed without TensorFlow (`--help` and a bad flag value answer at once); `run` then starts
TensorFlow without its start-up log on the console (`byol_keras.cli.quiet`), which `--debug` or the user's own
`TF_CPP_MIN_LOG_LEVEL` bring back.
"""

import argparse
import os
import re
import sys

from byol_keras.cli.quiet import start_tensorflow


def positive_int(text):
    """argparse type: an int > 0."""
    value = _parse(text, int, "an integer")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text):
    """argparse type: an int >= 0."""
    value = _parse(text, int, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def positive_float(text):
    """argparse type: a finite float > 0."""
    value = _parse(text, float, "a number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text):
    """argparse type: a finite float >= 0."""
    value = _parse(text, float, "a number")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def unit_interval(text):
    """argparse type: a float in [0, 1]."""
    value = _parse(text, float, "a number")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def fraction(text):
    """argparse type: a float in (0, 1]."""
    value = _parse(text, float, "a number")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def data_source(text):
    """argparse type for `--data`: 'digits', a TFDS name, or an existing folder (never a single file)."""
    if os.path.isfile(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is a single file, not a dataset folder: give the folder that holds the images "
            "(class sub-folders, optionally under train/ and test/)"
        )
    looks_like_path = os.sep in text or text.startswith(".") or text.startswith("~")
    if looks_like_path and not os.path.isdir(os.path.expanduser(text)):
        raise argparse.ArgumentTypeError(f"no such folder: {text!r}")
    return text


def existing_dir(text):
    """argparse type: an existing folder."""
    if not os.path.isdir(text):
        kind = "a file, not a folder" if os.path.exists(text) else "no such folder"
        raise argparse.ArgumentTypeError(f"{kind}: {text!r}")
    return text


def verbosity(text):
    """argparse type for `--verbose`: 'auto', or 0, 1 or 2 (Keras' own progress display)."""
    if text == "auto":
        return text
    if text not in ("0", "1", "2"):
        raise argparse.ArgumentTypeError(f"must be auto, 0, 1 or 2, got {text!r}")
    return int(text)


def add_debug_flag(parser):
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error, and TensorFlow's start-up log")


def run(main, parser, argv=None):
    """Call `main(args)` with the parsed flags; a library `ValueError`/`TypeError`/`OSError` becomes
    `prog: error: message` on stderr and exit status 2, with the flag behind a named argument added.

    Args:
        main: callable taking the parsed `argparse.Namespace`; its return value is returned.
        parser: the entry point's `argparse.ArgumentParser` (with `add_debug_flag`).
        argv: list of str or None (sys.argv).
    """
    args = parser.parse_args(argv)
    start_tensorflow(show_log=getattr(args, "debug", False))
    try:
        return main(args)
    except (ValueError, TypeError, OSError) as error:
        if getattr(args, "debug", False):
            raise
        parser.exit(2, f"{parser.prog}: error: {name_flags(str(error), parser)}\n")


def name_flags(message, parser):
    """`message` with " (flag --x)" after each backquoted argument name that a flag of `parser` sets."""
    flags = {}
    for action in parser._actions:
        long_options = [o for o in action.option_strings if o.startswith("--")]
        if long_options:
            flags.setdefault(action.dest, long_options[0])
    named = [flags[name] for name in re.findall(r"`(\w+)`", message) if name in flags]
    if named:
        message += " (set by " + ", ".join(dict.fromkeys(named)) + ")"
    return message


def _parse(text, kind, what):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def print_warning(message):
    print(f"warning: {message}", file=sys.stderr)


def add_evaluation_flags(parser):
    """The flags `linear_eval` and `finetune` share: what to evaluate, on which data, at which size."""
    parser.add_argument("run_dir", nargs="?", help="pretraining run directory (config.json, model.keras)")
    parser.add_argument("--encoder", help="a .keras file holding the encoder alone (overrides the run's)")
    parser.add_argument("--image-size", type=positive_int, help="input side; defaults to the run's image_size")
    parser.add_argument("--data", required=True, type=data_source, help="image folder, TFDS name, or 'digits'")
    parser.add_argument("--data-dir", help="TFDS data directory")
    parser.add_argument("--train-split", help="training split or sub-folder (default: train)")
    parser.add_argument("--test-split", help="test split or sub-folder (default: test / validation)")
    parser.add_argument("--crop-fraction", type=fraction, help="test centre crop (default 0.875, 1.0 < 96 px)")
    parser.add_argument("--batch-size", type=positive_int, default=256)


# TFDS sets whose held-out split is called "validation" rather than "test".
_VALIDATION_SPLIT = ("imagenet2012", "imagenette")


def run_evaluation(evaluate, parser, argv=None):
    """`run` for `linear_eval` / `finetune`: RUN_DIR or --encoder is required, then `evaluate(args)`."""

    def checked(args):
        from byol_keras.durable import check_writable

        if args.run_dir is None and args.encoder is None:
            parser.error("give RUN_DIR or --encoder")
        if args.out:  # checked before the work: a result that cannot be written would be lost at the end
            check_writable(os.path.dirname(os.path.abspath(args.out)), "--out")
        return evaluate(args)

    return run(checked, parser, argv)


def load_evaluation_inputs(args):
    """The encoder, image size, test crop fraction and train/test data that `add_evaluation_flags` describe.

    The image size and the crop fraction are the flags', else the run's `config.json` (read, not recomputed);
    a crop fraction of None (a standalone encoder, or a run evaluated at another size) is
    `preprocessing.default_crop_fraction` of the size. The data is read with the encoder's channels (RGB, or one
    channel for an encoder of grayscale images: `byol-pretrain --channels 1`).
    """
    from byol_keras.run_folder import load_encoder
    from byol_keras.transfer import input_channels

    encoder, config = load_encoder(args.run_dir, args.encoder)
    image_size = args.image_size or config.get("image_size")
    if image_size is None:
        raise ValueError("The image size is unknown: pass --image-size. Received: image_size=None")
    crop_fraction = args.crop_fraction
    if crop_fraction is None and image_size == config.get("image_size"):
        crop_fraction = config.get("crop_fraction")
    train, test = load_eval_data(args.data, args.data_dir, image_size, args.train_split, args.test_split,
                                 channels=input_channels(encoder))
    return encoder, image_size, crop_fraction, train, test


def load_eval_data(data, data_dir=None, image_size=None, train_split=None, test_split=None, channels=3):
    """Open the labelled train and test splits of a data source with `byol_keras.sources.load_source`.

    An image folder with `train/` and `test/` (or `val/`, `validation/`) sub-folders gives one split
    each; a TFDS name uses `train` and `test` (`validation` for ImageNet and Imagenette); `digits`
    uses its fixed split.

    Args:
        data: str, an image-folder path, a TFDS name or "digits".
        data_dir: str or None, the TFDS data directory. Defaults to None.
        image_size: int or None, passed on (digits are upsampled to it). Defaults to None.
        train_split: str or None, overrides the training split (a TFDS split or sub-folder name).
            Defaults to None.
        test_split: str or None, overrides the test split. Defaults to None.
        channels: 3 (RGB) or 1 (grayscale, each image's luma). Defaults to 3.

    Returns:
        Tuple `(train_source, test_source)` of `byol_keras.sources.Source`.
    """
    from byol_keras.sources import TFDS_NAMES, load_source

    if data != "digits" and data.split("/")[0] not in TFDS_NAMES:
        train_dir = os.path.join(data, train_split or "train")
        if test_split is None:
            names = ("test", "val", "validation")
            test_split = next((n for n in names if os.path.isdir(os.path.join(data, n))), "test")
        test_dir = os.path.join(data, test_split)
        if not os.path.isdir(train_dir) or not os.path.isdir(test_dir):
            raise ValueError(
                "An image folder for evaluation needs `train/` and `test/` (or `val/`) sub-folders, "
                f"one class folder each. Received: data={data!r}"
            )
        return (
            load_source(train_dir, image_size=image_size, channels=channels),
            load_source(test_dir, image_size=image_size, channels=channels),
        )
    if test_split is None:
        test_split = "validation" if data.split("/")[0] in _VALIDATION_SPLIT else "test"
    return (
        load_source(data, train_split or "train", data_dir, image_size=image_size, channels=channels),
        load_source(data, test_split, data_dir, image_size=image_size, channels=channels),
    )


def report_evaluation(args, results, protocol, image_size, line, default_name, **fields):
    """Finish an evaluation command: add the run's description to `results`, print `line`, write the JSON.

    `results` gets `protocol`, the flags `add_evaluation_flags` describe, `epochs`, `lr` and `fields`;
    the JSON goes to `--out`, else to RUN_DIR/`default_name` when there is a RUN_DIR, else nowhere.
    """
    results.update(protocol=protocol, **fields, data=args.data, run_dir=args.run_dir, encoder=args.encoder,
                   image_size=image_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    print(line)
    out = args.out or (os.path.join(args.run_dir, default_name) if args.run_dir else None)
    if out:
        from byol_keras.durable import atomic_write_json

        atomic_write_json(out, results, indent=2)
        print(f"wrote {out}")
    return results
