"""Pretrain an image encoder with BYOL.

    python -m training.pretrain --preset demo
    python -m training.pretrain --preset cifar10-resnet18 --data path/to/cifar10 --epochs 100 --out runs/cifar10
    python -m training.pretrain --preset imagenet-resnet50 --data imagenet2012 --data-dir /data/tfds --out runs/in1k

The clone's entry point for `byol_keras.cli.pretrain`, which pip installs as the `byol-pretrain` command
(same flags, listed by `--help`; what a run directory receives is in that module's docstring).
"""

import sys

from byol_keras.cli.pretrain import command

if __name__ == "__main__":
    sys.exit(command(prog="python -m training.pretrain"))
