"""Train-step throughput of `BYOL.fit` on random inputs, and its FLOP/s against TensorFlow's matmul rate.

    python -m benchmarks.step --batch 128 --size 32 --threads 2            # the default configuration
    python -m benchmarks.step --jit 0                                        # without XLA (1: with; auto: the library's choice)
    python -m benchmarks.step --profile runs/profile-step                    # + TensorBoard profile of 3 steps
    python -m benchmarks.step --encoder convnet --width 16 --size 16 --hidden 256 --projection-dim 64  # the demo's

ResNet-18 (CIFAR stem, width 64; or the demo's ConvNet, `--encoder convnet`: widths w, 2w, 4w), the
paper's heads (4096 → 256), SGD with momentum 0.9 (as the peer,
`../shared/bench/peer_step.py`), batches of two random float32 views, the whole step inside `fit`. Each
run is one epoch of `--steps` steps timed with `time.perf_counter` between `on_epoch_begin` and
`on_epoch_end`; the first `--warmup` epochs (tracing, XLA compilation) are not counted. Prints one JSON
line: images/second (pairs of views per second, the peer's unit: `batch / step time`), the achieved
FLOP/s of the step (counted analytically, `step_flops`) as a fraction of the float32 matmul FLOP/s
TensorFlow reaches in the same process, and the peak resident memory.
"""

import argparse
import os
import time

from benchmarks import report

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


def layer_flops(model):
    """Forward FLOPs per example of the Conv2D and Dense layers of a built model (2 per multiply-add).

    BatchNorm, ReLU, additions and pooling are left out: they are a few FLOPs per activation against
    hundreds per activation in the convolutions, and the ceiling they are compared with is a matmul rate.

    Args:
        model: a built Functional/Sequential `keras.Model` with known spatial shapes.

    Returns:
        `(total, first_conv)`: forward FLOPs per example, and those of the first convolution (whose
        input gradient a train step never computes).
    """
    total, first_conv = 0, None
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            cin, cout = layer.kernel.shape[2], layer.kernel.shape[3]
            _, oh, ow, _ = layer.output.shape
            flops = 2 * oh * ow * kh * kw * cin * cout
            if first_conv is None:
                first_conv = flops
        elif isinstance(layer, keras.layers.Dense):
            flops = 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
        else:
            continue
        total += flops
    return total, first_conv or 0


def step_flops(model):
    """FLOPs of one BYOL train step per image (pair of views), counted from the layers.

    Per view: the online network runs forward, backward to its inputs (all but the first convolution)
    and backward to its weights (3× its forward), the target network forward only.
    """
    encoder, first_conv = layer_flops(model.encoder)
    projector, _ = layer_flops(model.projector)
    predictor, _ = layer_flops(model.predictor)
    online = encoder + projector + predictor
    target = encoder + projector
    return 2 * (3 * online - first_conv + target)


def matmul_flops_per_second(size=2048, repeats=5, runs=5):
    """The float32 matmul rate TensorFlow reaches here: median FLOP/s of chained `size`² products."""
    import statistics

    a = tf.random.uniform((size, size))
    b = tf.random.uniform((size, size)) / size  # keeps the chain's values bounded

    @tf.function
    def chain(x):
        # A chain, not repeats of one product: Grappler would merge identical products into one.
        for _ in range(repeats):
            x = tf.matmul(x, b)
        return x

    chain(a).numpy()
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        chain(a).numpy()
        rates.append(repeats * 2 * size**3 / (time.perf_counter() - start))
    return statistics.median(rates)


def build_model(args, augment=None):
    """The benchmark's BYOL, compiled (XLA per `args.jit`); with `augment`, views made on the device."""
    from byol_keras.byol import BYOL
    from byol_keras.encoders import convnet, resnet18

    if getattr(args, "encoder", "resnet18") == "convnet":
        encoder = convnet((args.width, 2 * args.width, 4 * args.width), input_shape=(args.size, args.size, 3))
    else:
        encoder = resnet18(width=args.width, cifar_stem=True, input_shape=(args.size, args.size, 3),
                           fused_batch_norm=getattr(args, "bn", "fused") == "fused")
    model = BYOL(
        encoder,
        projection_dim=args.projection_dim,
        projection_hidden_dim=args.hidden,
        prediction_hidden_dim=args.hidden,
        total_steps=10_000,
        augment=augment,
        augment_on="data" if augment is None else "device",
    )
    if args.optimizer == "lars":
        from byol_keras.optimizers import LARS

        optimizer = LARS(0.05, momentum=0.9, weight_decay=1e-6)
    else:
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    model.compile(optimizer=optimizer, jit_compile="auto" if args.jit == "auto" else bool(int(args.jit)))
    args.jit_resolved = bool(model.jit_compile)
    return model


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch (perf_counter)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def random_views(batch, size, seed=0):
    """A repeated batch of two random float32 views (the peer's `torch.rand` inputs)."""
    generator = tf.random.Generator.from_seed(seed)
    view1 = generator.uniform((batch, size, size, 3))
    view2 = generator.uniform((batch, size, size, 3))
    return tf.data.Dataset.from_tensors((view1, view2)).repeat()


def run(args):
    report.set_threads(args.threads, args.inter_threads)
    rss_after_import = report.peak_rss_mb()
    model = build_model(args)
    dataset = random_views(args.batch, args.size)
    rss_after_build = report.peak_rss_mb()
    timer = EpochTimer()
    model.fit(dataset, epochs=args.warmup + args.runs, steps_per_epoch=args.steps, callbacks=[timer],
              verbose=0, shuffle=False)
    seconds = timer.seconds[args.warmup:]
    images_per_second = [args.batch * args.steps / s for s in seconds]

    if args.profile:
        tf.profiler.experimental.start(args.profile)
        model.fit(dataset, epochs=1, steps_per_epoch=args.profile_steps, verbose=0, shuffle=False)
        tf.profiler.experimental.stop()

    flops = step_flops(model)
    # Where the peak comes from: the runtime after `import tensorflow`, then the model (weights, both
    # networks, optimizer slots), then the step (activations kept for the gradient, kernels' buffers).
    extra = {"step_flops_per_image": flops, "peak_rss_mb_after_import": round(rss_after_import, 1),
             "peak_rss_mb_after_build": round(rss_after_build, 1)}
    if not args.no_matmul:
        import statistics

        matmul = matmul_flops_per_second()
        achieved = flops * statistics.median(images_per_second)
        extra.update(
            achieved_gflops=round(achieved / 1e9, 2),
            matmul_gflops=round(matmul / 1e9, 2),
            fraction_of_matmul=round(achieved / matmul, 3),
        )
    config = {k: getattr(args, k) for k in ("encoder", "batch", "size", "width", "hidden", "projection_dim", "threads", "inter_threads", "steps", "warmup", "jit", "optimizer", "bn")}
    config["jit_compile"] = getattr(args, "jit_resolved", None)
    return report.emit("train_step", config, images_per_second, "images/s", **extra)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--encoder", choices=("resnet18", "convnet"), default="resnet18",
                        help="ResNet-18 with the CIFAR stem (default), or the demo's ConvNet")
    parser.add_argument("--width", type=int, default=64,
                        help="ResNet-18 width (64 = the standard network); the ConvNet's first layer")
    parser.add_argument("--hidden", type=int, default=4096, help="hidden width of projector and predictor")
    parser.add_argument("--projection-dim", dest="projection_dim", type=int, default=256, help="projector output")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inter-threads", dest="inter_threads", type=int, default=None,
                        help="inter-op threads (default: --threads; 0: TensorFlow's own choice)")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs first (tracing, XLA compilation)")
    parser.add_argument("--bn", default="fused", choices=("fused", "keras"),
                        help="the encoder's BatchNorm: FusedBatchNormalization (default) or Keras' own")
    parser.add_argument("--jit", default="auto", choices=("auto", "0", "1"),
                        help="XLA (jit_compile): 1 on, 0 off, auto the library's choice (default)")
    parser.add_argument("--optimizer", choices=("sgd", "lars"), default="sgd")
    parser.add_argument("--profile", help="write a TensorBoard profile of a few steps to this folder")
    parser.add_argument("--profile-steps", dest="profile_steps", type=int, default=2)
    parser.add_argument("--no-matmul", action="store_true", help="skip the matmul-rate measurement")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
