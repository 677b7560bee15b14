"""Train-step speed of BYOL on a KerasHub ResNet-18 against byol_keras' own ResNet-18 of the same width.

    python -m benchmarks.encoder_step --size 64 --batch 64 --threads 2     # the figures of docs/results.md
    python -m benchmarks.encoder_step --size 32 --batch 128 --runs 3

Both encoders are built as the command line builds them (`byol_keras.encoders.build_encoder`): byol_keras'
`resnet18` with the ImageNet stem (7×7 stride 2, 3×3 max-pool; `{"name": "resnet18", "cifar_stem": False}`,
width 64), and KerasHub's `ResNetBackbone` of ResNet-18's configuration (basic blocks 2-2-2-2, 64 → 512; KerasHub
has only the ImageNet stem) saved to a local preset directory and read back as `--encoder keras_hub:<dir>` reads
it. The rest is one model: the paper's heads (4096 → 256), LARS (as the presets), the library's XLA choice, two
random float32 views per batch (`benchmarks.step.random_views`). The two models' timed epochs alternate (one
epoch of `--steps` steps each, after `--warmup` untimed ones), so that a change of load on a shared machine
falls on both. Prints one JSON line per encoder (`benchmarks.report.emit`), the ratio of their medians and the median
of the paired epochs' ratios (each KerasHub epoch against the byol_keras epoch just before it).
"""

import argparse
import os
import tempfile

from benchmarks import report

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import byol_keras  # noqa: E402, F401  (before TensorFlow: oneDNN on, as the commands run)

# KerasHub's ResNet-18 (its `resnet_18_imagenet` preset's architecture), built from its config.
KERAS_HUB_RESNET18 = dict(
    input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
    stackwise_num_blocks=[2, 2, 2, 2], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
)


def build(spec, args):
    """BYOL on the encoder of `spec`, as `byol-pretrain` builds it, compiled with LARS."""
    from byol_keras.byol import BYOL
    from byol_keras.encoders import build_encoder
    from byol_keras.optimizers import LARS

    encoder = build_encoder(spec, args.size)
    model = BYOL(encoder, projection_dim=256, projection_hidden_dim=4096, prediction_hidden_dim=4096,
                 total_steps=10_000)
    model.compile(optimizer=LARS(0.05, momentum=0.9, weight_decay=1e-6), jit_compile="auto")
    return model


def run(args):
    import keras_hub

    from benchmarks.step import EpochTimer, random_views

    report.set_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        keras_hub.models.ResNetBackbone(**KERAS_HUB_RESNET18).save_to_preset(os.path.join(folder, "resnet18"))
        specs = {
            "byol_keras.resnet18": {"name": "resnet18", "width": 64, "cifar_stem": False},
            "keras_hub.ResNetBackbone": {"name": "keras_hub", "preset": os.path.join(folder, "resnet18"),
                                         "pooling": "auto"},
        }
        models = {name: build(spec, args) for name, spec in specs.items()}
    dataset = random_views(args.batch, args.size)
    timers = {name: EpochTimer() for name in models}
    for name, model in models.items():
        model.fit(dataset, epochs=args.warmup, steps_per_epoch=args.steps, verbose=0, shuffle=False)
    for _ in range(args.runs):
        for name, model in models.items():
            model.fit(dataset, epochs=1, steps_per_epoch=args.steps, callbacks=[timers[name]], verbose=0,
                      shuffle=False)
    medians = {}
    for name, model in models.items():
        values = [args.batch * args.steps / s for s in timers[name].seconds]
        config = {"encoder": name, "batch": args.batch, "size": args.size, "steps": args.steps,
                  "threads": args.threads, "jit_compile": bool(model.jit_compile),
                  "encoder_params": model.encoder.count_params()}
        medians[name] = report.emit("encoder_step", config, values, "images/s")["median"]
    import statistics

    # Each KerasHub epoch against the byol_keras epoch just before it: the ratio a load change disturbs least.
    paired = [ours / theirs for ours, theirs in zip(timers["byol_keras.resnet18"].seconds,
                                                    timers["keras_hub.ResNetBackbone"].seconds)]
    ours, theirs = medians["byol_keras.resnet18"], medians["keras_hub.ResNetBackbone"]
    print(f"KerasHub ResNet-18 / byol_keras resnet18: {theirs / ours:.2f}x the images/s (ratio of medians); "
          f"paired epochs: median {statistics.median(paired):.2f}x, {min(paired):.2f}-{max(paired):.2f}x")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed epoch")
    parser.add_argument("--runs", type=int, default=5, help="timed epochs per encoder, alternating")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs first (tracing, XLA compilation)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
