r"""Linear evaluation of a pretrained BYOL encoder: the paper's protocol.

    byol-linear-eval runs/cifar10 --data /work/shared/data/cifar10 \
        --epochs 100 --batch-size 256 --lr 0.1 --out runs/cifar10/linear_eval.json

    byol-linear-eval --encoder encoder.keras --image-size 32 --data digits --epochs 10

The paper's linear protocol (its appendix on ImageNet linear evaluation): the encoder is frozen, with
BatchNorm in inference mode, and a single linear layer on its pooled features is trained with SGD,
Nesterov momentum 0.9 and no weight decay; training images get a random resized crop and a horizontal
flip, test images are resized and centre-cropped (256 -> 224 on ImageNet; below 96 px no crop, as
solo-learn does on CIFAR). The learning rate decays with a cosine to 0 (the schedule is this code's
choice). Prints top-1 / top-5 and writes them as JSON.
"""

import argparse

from byol_keras import cli


def run_linear_eval(
    encoder,
    train_data,
    test_data,
    num_classes,
    image_size,
    epochs=100,
    batch_size=256,
    learning_rate=0.1,
    crop_fraction=None,
    seed=0,
    verbose=1,
):
    """Train a linear classifier on the frozen `encoder` and measure it on `test_data`.

    `byol_keras.transfer.transfer` with `freeze=True` and no weight decay: the arguments are its own.

    Returns:
        Dict `{"top1": float, "top5": float}` on the test set.
    """
    from byol_keras.transfer import transfer

    return transfer(encoder, train_data, test_data, num_classes, image_size, freeze=True, epochs=epochs,
                    batch_size=batch_size, learning_rate=learning_rate, weight_decay=0.0,
                    crop_fraction=crop_fraction, seed=seed, verbose=verbose)


def build_parser(prog="byol-linear-eval"):
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_evaluation_flags(parser)
    parser.add_argument("--epochs", type=cli.positive_int, default=100)
    parser.add_argument("--lr", type=cli.positive_float, default=0.1, help="peak learning rate (cosine decay to 0)")
    parser.add_argument("--seed", type=cli.non_negative_int, default=0)
    parser.add_argument("--out", help="results JSON; defaults to RUN_DIR/linear_eval.json")
    cli.add_debug_flag(parser)
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def _linear_eval(args):
    encoder, image_size, crop_fraction, train, test = cli.load_evaluation_inputs(args)
    results = run_linear_eval(
        encoder,
        train.dataset,
        test.dataset,
        train.num_classes,
        image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        crop_fraction=crop_fraction,
        seed=args.seed,
    )
    line = f"linear eval: top-1 {results['top1']:.4f}  top-5 {results['top5']:.4f}"
    return cli.report_evaluation(args, results, "linear", image_size, line, "linear_eval.json")


def main(argv=None, prog="byol-linear-eval"):
    parser = build_parser(prog)
    return cli.run_evaluation(_linear_eval, parser, argv)


def command(prog="byol-linear-eval"):
    """The `byol-linear-eval` program on `sys.argv`: exit status 0 (2 for a bad flag, from argparse)."""
    main(prog=prog)
    return 0
