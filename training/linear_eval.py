r"""Linear evaluation of a pretrained BYOL encoder: the paper's protocol.

    python -m training.linear_eval runs/cifar10 --data /work/shared/data/cifar10 \
        --epochs 100 --batch-size 256 --lr 0.1 --out runs/cifar10/linear_eval.json

    python -m training.linear_eval --encoder encoder.keras --image-size 32 --data digits --epochs 10

The clone's entry point for `byol_keras.cli.linear_eval`, which pip installs as the `byol-linear-eval` command
(same flags; `--help` lists them).
"""

import sys

from byol_keras.cli.linear_eval import command

if __name__ == "__main__":
    sys.exit(command(prog="python -m training.linear_eval"))
