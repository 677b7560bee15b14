"""Export a trained run as a TF Serving SavedModel (image bytes in, embeddings out).

Usage:
    python -m training.export runs/cifar10_byol --out saved_models/cifar10_byol
    python -m training.export runs/cifar10_byol --out saved_models/cifar10_byol --version 3

The clone's entry point for `byol_keras.cli.export`, which pip installs as the `byol-export` command
(same flags; `--help` lists them).
"""

import sys

from byol_keras.cli.export import command

if __name__ == "__main__":
    sys.exit(command(prog="python -m training.export"))
