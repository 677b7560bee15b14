"""What the quality budget allows with labels: supervised training, then the same kNN as the benchmark.

    python -m benchmarks.supervised_ceiling --seed 0     # ~4 min here, alone on 2 cores

The quality benchmark (`quality.py`) asks how far BYOL lifts kNN top-1 in 10 epochs over 10,000
CIFAR-10 images with a ResNet-18 of width 16 and batch 256 (390 steps). This script spends the same
budget — the same encoder (CIFAR stem, PyTorch's default initialisation), images, batch and epochs —
on supervised training with the labels BYOL never sees, through the library's fine-tuning path
(`evaluation.classifier_on_encoder` + `train_classifier`: softmax cross-entropy on a linear head, SGD
with Nesterov momentum 0.9, weight decay 5e-4, cosine LR; random-resized-crop 8–100 % as the views,
and flip). It then measures the encoder exactly as `quality.py` does (kNN, k = 200, cosine,
exp(sim / 0.1) votes; bank = the 10,000 training images, queries = the 10,000 test images) and prints
one JSON line with that and the classifier's own test top-1. A self-supervised run on this budget is
not expected to beat its labelled counterpart: the figure bounds what any BYOL recipe can reach here.
"""

import argparse
import json
import os
import platform
import time


from byol_keras.presets import PYTORCH_DEFAULT_INIT  # noqa: E402

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "cifar10")
BUDGET = dict(per_class=1000, width=16, image_size=32, batch_size=256, epochs=10)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--learning-rate", type=float, default=0.1, help="peak SGD learning rate (default 0.1)")
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="Keras SGD weight decay (default 5e-4)")
    parser.add_argument("--epochs", type=int, default=BUDGET["epochs"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.data, "train")):
        raise SystemExit(f"error: no CIFAR-10 image folder at {args.data!r} (expected train/ and test/)")

    import keras
    import numpy as np
    import tensorflow as tf

    from byol_keras import encoders
    from byol_keras.preprocessing import normalize
    from byol_keras.data import load_arrays, load_source
    from byol_keras.eval_data import classification_dataset
    from byol_keras.knn import knn_accuracy
    from byol_keras.transfer import classifier_on_encoder, evaluate_classifier, train_classifier

    keras.utils.set_random_seed(args.seed)
    size = BUDGET["image_size"]
    train = load_arrays(load_source(args.data, "train"), size, BUDGET["per_class"], crop_fraction=1.0)
    test = load_arrays(load_source(args.data, "test"), size, None, crop_fraction=1.0)
    bank = (normalize(train[0]).numpy(), train[1])
    queries = (normalize(test[0]).numpy(), test[1])
    num_classes = int(train[1].max()) + 1

    encoder = encoders.resnet18(input_shape=(size, size, 3), width=BUDGET["width"], cifar_stem=True,
                                kernel_initializer=PYTORCH_DEFAULT_INIT)
    knn_random = knn_accuracy(encoder, bank, queries)
    print(f"kNN top-1, random init: {knn_random:.4f}", flush=True)

    model = classifier_on_encoder(encoder, num_classes, freeze=False, image_size=size)
    # Drop the remainder as pretraining does: 39 steps per epoch, 390 in all.
    steps_per_epoch = len(train[1]) // BUDGET["batch_size"]
    dataset = classification_dataset(train, size, BUDGET["batch_size"], training=True, seed=args.seed, repeat=True)
    start = time.time()
    train_classifier(model, dataset, args.epochs, args.learning_rate, weight_decay=args.weight_decay,
                     steps_per_epoch=steps_per_epoch, verbose=2)
    seconds = time.time() - start
    test_top1 = evaluate_classifier(model, classification_dataset(test, size, 500, training=False, crop_fraction=1.0))["top1"]
    knn_trained = knn_accuracy(encoder, bank, queries)
    result = {
        "benchmark": "supervised_ceiling_cifar10_knn",
        "budget": BUDGET | {"epochs": args.epochs, "steps": args.epochs * steps_per_epoch},
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "knn_top1_random_init": knn_random,
        "knn_top1_supervised": knn_trained,
        "classifier_test_top1": float(test_top1),
        "seconds": round(seconds, 1),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
