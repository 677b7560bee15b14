r"""Semi-supervised evaluation: fine-tune a pretrained BYOL encoder on 1 % or 10 % of the labels.

    python -m training.finetune runs/cifar10 --data /work/shared/data/cifar10 --fraction 0.01 \
        --seed 0 --epochs 30 --batch-size 256 --lr 0.01 --out runs/cifar10/finetune_1pct.json

The clone's entry point for `byol_keras.cli.finetune`, which pip installs as the `byol-finetune` command
(same flags; `--help` lists them).
"""

import sys

from byol_keras.cli.finetune import command

if __name__ == "__main__":
    sys.exit(command(prog="python -m training.finetune"))
