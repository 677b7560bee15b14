"""Quality benchmark: BYOL on a fixed CIFAR-10 budget, kNN top-1 on the test split.

    python benchmarks/quality.py --recipe ours
    python benchmarks/quality.py --recipe lightly

Budget (fixed, from the issue): the first 1,000 training images of each class (10,000) from
`../shared/data/cifar10`, ResNet-18 (CIFAR stem) of width 16, 32 px views without blur, batch 256,
10 epochs. kNN (k = 200, cosine, exp(sim / 0.1) votes): bank = those 10,000 training images,
queries = the 10,000 test images. The random-initialised encoder is the floor. Prints one JSON line.

Recipes (only optimisation and τ differ; the budget does not):
- `lightly`: lightly's CIFAR example, SGD 0.06 × batch / 128 with momentum 0.9, weight decay 5e-4,
  cosine (no warm-up), τ 0.99 → 1.
- `ours`: LARS as the paper (η 1e-3, biases and BN excluded), base LR 1.0 × batch / 256 (solo-learn's
  CIFAR value), weight decay 1e-5, one warm-up epoch (the paper's 10 of 1000 epochs is 1 %; of a
  10-epoch run, a whole epoch is the least that still warms up), and τ_base 0.97 — the paper's preset
  for its shortest schedule (40 epochs: 0.97), because with only 390 steps a slower target barely moves.
"""

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "cifar10")

RECIPES = {
    # 0.06 × 256 / 128 = 0.12 at batch 256 (the LR is then scaled by 256 / 256 = 1).
    "lightly": dict(optimizer="sgd", base_learning_rate=0.12, weight_decay=5e-4,
                    warmup_epochs=0, base_tau=0.99),
    "ours": dict(optimizer="sgd", base_learning_rate=0.12, weight_decay=5e-4, warmup_epochs=0, base_tau=0.97,
                 augment={"crop_area": (0.2, 1.0)}),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="ours")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--out", default=None, help="run directory (default: runs/quality-<recipe>)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.data, "train")):
        raise SystemExit(f"error: no CIFAR-10 image folder at {args.data!r} (expected train/ and test/)")

    import keras
    import tensorflow as tf

    from byol_keras.presets import get_preset
    from training.pretrain import run

    recipe = RECIPES[args.recipe]
    config = get_preset(
        "cifar10-resnet18",
        data=os.path.abspath(args.data),
        epochs=args.epochs,
        batch_size=256,
        image_size=32,
        load_size=32,
        blur=False,
        encoder={"name": "resnet18", "width": 16, "cifar_stem": True},
        limit_per_class=1000,
        knn_bank_per_class=None,
        knn_queries_per_class=None,
        knn_every_n_epochs=1,
        **recipe,
    )
    config.update(
        seed=args.seed,
        steps_per_epoch_cap=None,
        run_dir=os.path.abspath(args.out or os.path.join("runs", f"quality-{args.recipe}")),
        export_base_path=None,
        verbose=2,
        strategy="auto",
        precision="float32",
        sync_bn=False,
        backup_every=None,
    )
    summary = run(config)
    print(json.dumps({
        "benchmark": "quality_cifar10_knn",
        "recipe": args.recipe,
        "config": {k: config[k] for k in ("optimizer", "base_learning_rate", "trust_coefficient", "weight_decay", "warmup_epochs",
                                          "base_tau", "epochs", "batch_size")},
        "knn_top1_random_init": summary["knn_top1_random_init"],
        "knn_top1_pretrained": summary["knn_top1_pretrained"],
        "seconds": summary["seconds"],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }))


if __name__ == "__main__":
    main()
