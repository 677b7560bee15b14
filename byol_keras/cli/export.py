"""Export a trained run as a TF Serving SavedModel (image bytes in, embeddings out).

Usage:
    byol-export runs/cifar10_byol --out saved_models/cifar10_byol
    byol-export runs/cifar10_byol --out saved_models/cifar10_byol --version 3

Reads `RUN_DIR/config.json` (needs "image_size"; "channels", 3 or 1, says whether the signatures take RGB or
grayscale images) and `RUN_DIR/model.keras` (the saved BYOL model, or any Keras encoder), and writes
`OUT/VERSION/` in the layout TF Serving expects. `--out` defaults to `saved_models/<name of RUN_DIR>`;
`--version` defaults to one more than the highest existing version. An existing version is never overwritten.
Serve it with:

    tensorflow_model_server --rest_api_port=8501 --model_name=cifar10_byol \
        --model_base_path=$PWD/saved_models/cifar10_byol

See saved_models/README.md for requests and inspection.
"""

import argparse
import os

from byol_keras import cli
from byol_keras.run_folder import MODEL_FILENAME, load_run


def export_run(run_dir, out=None, version=None, crop_fraction=None, include_projector=True, max_pixels=None):
    """Export the model of `run_dir` to `out/VERSION/` for TF Serving.

    Args:
        run_dir: str or path-like, the training run folder.
        out: str or path-like, the model base path. Defaults to `saved_models/<basename of run_dir>`.
        version: int or None, the version folder. Defaults to the next free version.
        crop_fraction: float in (0, 1], evaluation centre-crop fraction. Defaults to the run's
            `config.json` "crop_fraction" (what its kNN monitor used), else the default for its image size
            (`byol_keras.preprocessing.default_crop_fraction`, for a run recorded before the field).
        include_projector: bool, add the `project` signature when the model has a projector.
            Defaults to True.
        max_pixels: int or None, the serving signatures refuse larger images before decoding them.
            Defaults to the run's `config.json` "max_pixels" (the limit its training data was read with),
            else `byol_keras.decoding.DEFAULT_MAX_PIXELS`.

    Returns:
        dict, the export description (see `byol_keras.export.export_version`).
    """
    from byol_keras.export import export_version

    run_dir = os.fspath(run_dir)
    if out is None:
        out = os.path.join("saved_models", os.path.basename(os.path.normpath(run_dir)))
    if version is not None and os.path.exists(os.path.join(out, str(version))):
        # export_version checks again before renaming into place; failing here spares loading the model.
        raise FileExistsError(f"Version {version} already exists at {os.path.join(out, str(version))!r}; "
                              "refusing to overwrite it. Omit --version to use the next free one.")
    model, config = load_run(run_dir)
    print(f"Loaded {type(model).__name__} from {os.path.join(run_dir, MODEL_FILENAME)} "
          f"(image_size={config['image_size']})", flush=True)
    if crop_fraction is None:
        crop_fraction = config.get("crop_fraction")  # None: the library's rule, in export_encoder
    if max_pixels is None:
        from byol_keras.decoding import DEFAULT_MAX_PIXELS

        max_pixels = int(config.get("max_pixels", DEFAULT_MAX_PIXELS))
    return export_version(
        model,
        out,
        int(config["image_size"]),
        version=version,
        crop_fraction=crop_fraction,
        include_projector=include_projector,
        max_pixels=max_pixels,
        # The run's: RGB or grayscale bytes and pixels in (absent from the record: the encoder's input says).
        channels=config.get("channels"),
    )


def build_parser(prog="byol-export"):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Export a trained run as a TF Serving SavedModel.",
    )
    parser.add_argument("run_dir", type=cli.existing_dir, help="training run folder with config.json and model.keras")
    parser.add_argument("--out", default=None, help="model base path (default: saved_models/<run name>)")
    parser.add_argument("--version", type=cli.positive_int, default=None, help="version folder (default: next free)")
    parser.add_argument("--crop-fraction", type=cli.fraction, default=None,
                        help="evaluation centre crop (default: the run's config)")
    parser.add_argument("--no-projector", action="store_true", help="omit the `project` signature")
    parser.add_argument("--max-pixels", dest="max_pixels", type=cli.positive_int, default=None,
                        help="refuse images above this many pixels before decoding them (default: the run's "
                             "config, else 89478485, Pillow's limit)")
    cli.add_debug_flag(parser)
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None, prog="byol-export"):
    return cli.run(_export, build_parser(prog), argv)


def _export(args):
    description = export_run(
        args.run_dir,
        out=args.out,
        version=args.version,
        crop_fraction=args.crop_fraction,
        include_projector=not args.no_projector,
        max_pixels=args.max_pixels,
    )
    print(f"Wrote SavedModel version {description['version']} to {description['export_dir']}")
    print(f"  signatures: {', '.join(description['signatures'])}")
    print(f"  embedding_dim={description['embedding_dim']}, projection_dim={description['projection_dim']}, "
          f"image_size={description['image_size']}, channels={description['channels']}, "
          f"crop_fraction={description['crop_fraction']}, "
          f"max_pixels={description['max_pixels']}")
    print(f"  Keras encoder copy: {description['keras_path']}")
    print(f"Inspect: saved_model_cli show --dir {description['export_dir']} --all", flush=True)
    return description


def command(prog="byol-export"):
    """The `byol-export` program on `sys.argv`: exit status 0 (2 for a bad flag, from argparse)."""
    main(prog=prog)
    return 0
