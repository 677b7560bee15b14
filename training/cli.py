"""What every `training/` entry point shares: flag types that check their values, and clean errors.

A command-line user gets one line on stderr and exit status 2 (argparse's convention) for a bad flag,
naming the flag and the value given, whether argparse or the library found the problem; a traceback only
with `--debug` or for an error the program did not expect.
"""

import argparse
import os
import re
import sys


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


def add_debug_flag(parser):
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def run(main, parser, argv=None):
    """Call `main(args)` with the parsed flags; a library `ValueError`/`TypeError`/`OSError` becomes
    `prog: error: message` on stderr and exit status 2, with the flag behind a named argument added.

    Args:
        main: callable taking the parsed `argparse.Namespace`; its return value is returned.
        parser: the entry point's `argparse.ArgumentParser` (with `add_debug_flag`).
        argv: list of str or None (sys.argv).
    """
    args = parser.parse_args(argv)
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
