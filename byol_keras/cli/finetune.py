r"""Semi-supervised evaluation: fine-tune a pretrained BYOL encoder on 1 % or 10 % of the labels.

    byol-finetune runs/cifar10 --data /work/shared/data/cifar10 --fraction 0.01 \
        --seed 0 --epochs 30 --batch-size 256 --lr 0.01 --out runs/cifar10/finetune_1pct.json

The paper's semi-supervised protocol: the encoder and a linear head are fine-tuned on a class-balanced
subset of 1 % or 10 % of the labelled training set (SimCLR's subsets). Here: SGD with Nesterov momentum
0.9, no weight decay, cosine decay, and the linear protocol's training and test transforms. The subset comes from `byol_keras.subsets.balanced_subset`
with `--seed`, so runs with the same seed see the same labelled images. Unlike the linear protocol the
encoder trains, BatchNorm included. Prints top-1 / top-5 and writes them as JSON.
"""

import argparse

from byol_keras import cli


def labelled_subset(train_data, fraction, seed, labels=None):
    """Keep the `balanced_subset` of a labelled set.

    Args:
        train_data: `(images, labels)` arrays, or an unbatched dataset of `(image, label)` in a fixed
            order.
        fraction: float in (0, 1].
        seed: int.
        labels: int array or None, the dataset's labels in order when known without decoding
            (`Source.labels` of folders and digits). Defaults to None: for a dataset, read them with
            one pass, which decodes every image once.

    Returns:
        Tuple `(subset, indices)`: the subset in the form of `train_data`, and the kept indices.
    """
    import numpy as np
    import tensorflow as tf

    from byol_keras.subsets import balanced_subset, keep_elements

    is_dataset = isinstance(train_data, tf.data.Dataset)
    if labels is None:
        if is_dataset:
            labels = [int(label) for label in train_data.map(lambda image, label: label)]
        else:
            labels = train_data[1]
    labels = np.asarray(labels).reshape(-1)
    # Unlabelled examples (-1) never enter the subset.
    labelled = np.flatnonzero(labels >= 0)
    indices = labelled[balanced_subset(labels[labelled], fraction, seed)]
    if not is_dataset:
        return (np.asarray(train_data[0])[indices], labels[indices]), indices
    keep = np.zeros(len(labels), dtype=bool)
    keep[indices] = True
    return keep_elements(train_data, keep), indices


def run_finetune(
    encoder,
    train_data,
    test_data,
    num_classes,
    image_size,
    fraction,
    seed=0,
    epochs=30,
    batch_size=256,
    learning_rate=0.01,
    weight_decay=0.0,
    crop_fraction=None,
    train_labels=None,
    verbose=1,
):
    """Fine-tune `encoder` and a linear head on a class-balanced label subset; measure on `test_data`.

    `byol_keras.transfer.transfer` with `freeze=False` on `labelled_subset`; the encoder's weights are
    updated in place.

    Args:
        encoder: `keras.Model` from ImageNet-normalised images to pooled features `(batch, dim)`.
        train_data: `(images, labels)` arrays in [0, 255] or an unbatched, fixed-order dataset of
            `(image, label)`.
        test_data: `(images, labels)` arrays or an unbatched dataset.
        num_classes: int.
        image_size: int, side of the encoder's input images.
        fraction: float in (0, 1], the labelled fraction (0.01 and 0.1 in the paper).
        seed: int, chooses the subset and the shuffling. Defaults to 0.
        epochs: int. Defaults to 30.
        batch_size: int. Defaults to 256.
        learning_rate: float, peak SGD learning rate. Defaults to 0.01.
        weight_decay: float. Defaults to 0.0.
        crop_fraction: float or None, the test centre-crop fraction. Defaults to None:
            `preprocessing.default_crop_fraction(image_size)`.
        train_labels: int array or None, the labels of a `train_data` dataset, when known without
            decoding (`Source.labels`). Defaults to None.
        verbose: int, 1 shows progress bars. Defaults to 1.

    Returns:
        Dict `{"top1": float, "top5": float, "num_labelled": int}`.
    """
    from byol_keras.transfer import transfer

    subset, indices = labelled_subset(train_data, fraction, seed, labels=train_labels)
    results = transfer(encoder, subset, test_data, num_classes, image_size, freeze=False, epochs=epochs,
                       batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay,
                       crop_fraction=crop_fraction, seed=seed, verbose=verbose)
    results["num_labelled"] = int(len(indices))
    return results


def build_parser(prog="byol-finetune"):
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_evaluation_flags(parser)
    parser.add_argument("--fraction", type=cli.fraction, default=0.01, help="labelled fraction, e.g. 0.01 or 0.1")
    parser.add_argument("--seed", type=cli.non_negative_int, default=0, help="chooses the labelled subset")
    parser.add_argument("--epochs", type=cli.positive_int, default=30)
    parser.add_argument("--lr", type=cli.positive_float, default=0.01, help="peak learning rate (cosine decay to 0)")
    parser.add_argument("--out", help="results JSON; defaults to RUN_DIR/finetune_<percent>pct.json")
    cli.add_debug_flag(parser)
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def _finetune(args):
    encoder, image_size, crop_fraction, train, test = cli.load_evaluation_inputs(args)
    results = run_finetune(
        encoder,
        train.dataset,
        test.dataset,
        train.num_classes,
        image_size,
        fraction=args.fraction,
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        crop_fraction=crop_fraction,
        train_labels=train.labels,
    )
    line = (f"fine-tune on {results['num_labelled']} labels ({args.fraction:.0%}): "
            f"top-1 {results['top1']:.4f}  top-5 {results['top5']:.4f}")
    return cli.report_evaluation(args, results, "finetune", image_size, line,
                                 f"finetune_{args.fraction * 100:g}pct.json", fraction=args.fraction, seed=args.seed)


def main(argv=None, prog="byol-finetune"):
    parser = build_parser(prog)
    return cli.run_evaluation(_finetune, parser, argv)


def command(prog="byol-finetune"):
    """The `byol-finetune` program on `sys.argv`: exit status 0 (2 for a bad flag, from argparse)."""
    main(prog=prog)
    return 0
