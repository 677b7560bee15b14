"""What a GPU user asks first, in one unattended command: BYOL's step against a supervised one, precision, XLA,
replicas, the input pipeline and memory.

    python -m benchmarks.gpu                          # a GPU host: everything it can in --budget-s 420 (8 min in all)
    python -m benchmarks.gpu --budget-s 120           # a shorter slot: the most useful configurations first
    python -m benchmarks.gpu --tiny                   # tiny sizes (the default when no GPU is visible; the test's)
    python -m benchmarks.gpu --no-tiny --size 64 --batches 32 --threads 2   # ResNet-50 on a CPU, smaller views

The model and the data are built as `byol-pretrain --preset imagenet-resnet50` builds them (the preset, then
`encoders.build_encoder` and `optimizers.build_optimizer`: LARS, the paper's heads, the online probe on 1,000 classes,
synchronised BatchNorm with several replicas), with the views made on the device:
`BYOL(augment=BYOLAugment(...), augment_on="device")` fed `(crops1, crops2, labels)` as
`pretrain_dataset(..., views_on="device")` yields them. Each configuration is timed with `fit` (one untimed
warm-up epoch: tracing, XLA compilation; then epochs of `--steps` steps, `perf_counter` between
`on_epoch_begin` and `on_epoch_end`) and printed as one JSON line as soon as it finishes:

- `byol_step`: images/s (pairs of views per second) of `BYOL.fit` on a fixed batch of random uint8 crops held
  by `tf.data` (the step alone: no decoding), for each precision the device supports (float32 always;
  mixed_float16 on GPUs of compute capability >= 7.0, mixed_bfloat16 on >= 8.0 and on CPUs with AVX-512 BF16 or
  AMX) and XLA on and off; the batch per device is the first of `--batches` that does not run out of memory;
  `peak_memory_mb` is `tf.config.experimental.get_memory_info`'s peak on the device (where its allocator counts
  nothing, e.g. a CPU without TensorFlow's BFC allocator, the process's peak resident memory instead;
  `memory_source` says which).
- `supervised_step`: the same encoder with a 1,000-way softmax head (`transfer.classifier_on_encoder`, SGD with
  Nesterov momentum, cross-entropy), same batch, precision, XLA and input (view 1's crops, normalised on the
  device); `byol_to_supervised` is the ratio of the two medians. A BYOL step does 8 forward-passes' worth of
  work per image (two views; online forward + backward ~ 3, target forward 1) against a supervised step's 3, so
  3/8 = 0.375 is what the FLOPs allow and 0.33 the bar (`meets_bar`).
- `scaling`: `MirroredStrategy` on the first device and on all of them (synchronised BatchNorm in both; XLA as
  the library resolves it for several replicas: off), the same batch per device; `scaling_ratio` is the
  images/s on N devices over those on one, `efficiency` that over N. Only with several devices
  (`--cpu-devices 2` splits a CPU into two logical devices, which share its cores: it checks the code path,
  not the speed).
- `input`: images/s of `pretrain_dataset(load_source(photos), BYOLAugment, batch, views_on="device")` alone on
  the host (a folder of 400x300 JPEGs made here as `benchmarks.photos` makes it, decoded every batch as
  ImageNet's are), then of the first configuration's whole step fed from it; `bound` says which side limits:
  "host" when the pipeline alone is slower than the step alone, "device" otherwise.

Every configuration runs within `--budget-s` seconds from the start of the run (after imports): the most
useful ones first (the fastest precision with XLA, then the input side, the supervised ratio, scaling, then
the rest); one that does not fit is printed as `skipped`, and at the deadline a watchdog prints
`budget_exhausted` (naming the configuration it interrupts) and the `summary`, then ends the process. The last
line is always `summary`: every figure above in one object.
"""

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time

from benchmarks import report
from benchmarks.step import EpochTimer

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

PRESET = "imagenet-resnet50"
NUM_CLASSES = 1000  # ImageNet's: the online probe's and the supervised head's width
# BYOL per image: 2 views x (online forward + backward ~ 3 forwards, target forward 1) = 8 forwards; supervised 3.
FLOPS_RATIO = 3 / 8
BAR = 0.33  # issue 34: "≥ 0.33× supervised images/s is the bar"
DEFAULT_BUDGET_S = 420  # + TensorFlow's start-up and the last line: within 8 minutes
# What `--tiny` (and a host without a GPU) runs: every code path in seconds on a CPU.
TINY = dict(size=32, batches=(16, 8), encoder={"name": "convnet", "widths": (4, 8, 16)}, hidden=32,
            projection_dim=16, steps=2, runs=1, photos=40, photo_size=(64, 48))
FULL = dict(size=224, batches=(256, 128, 64), encoder={"name": "resnet50"}, hidden=None, projection_dim=None,
            steps=20, runs=3, photos=1000, photo_size=(400, 300))


# --------------------------------------------------------------------------------------------------------
# The devices and what they support
# --------------------------------------------------------------------------------------------------------


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def supported_precisions(gpus):
    """The dtype policies worth timing here: float32, and the mixed ones the device runs natively.

    Args:
        gpus: list of physical GPU devices (`tf.config.list_physical_devices("GPU")`).

    Returns:
        tuple of policy names, the one expected fastest first.
    """
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
        mixed = (("mixed_float16",) if capability >= (7, 0) else ()) + (
            ("mixed_bfloat16",) if capability >= (8, 0) else ())
        return mixed + ("float32",)
    # oneDNN runs bfloat16 convolutions and matmuls natively with AVX-512 BF16 or AMX.
    flags = cpu_flags()
    return (("mixed_bfloat16",) if flags & {"avx512_bf16", "amx_bf16"} else ()) + ("float32",)


def device_names(gpus):
    if gpus:
        return [f"/gpu:{i}" for i in range(len(gpus))]
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def device_description(gpus):
    if not gpus:
        return {"type": "CPU", "count": len(tf.config.list_logical_devices("CPU")), "cpu": report.machine().get("cpu"),
                "bfloat16_flags": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile"})}
    details = [tf.config.experimental.get_device_details(g) for g in gpus]
    return {"type": "GPU", "count": len(gpus), "names": [d.get("device_name") for d in details],
            "compute_capability": [d.get("compute_capability") for d in details]}


def reset_peak(device):
    try:
        tf.config.experimental.reset_memory_stats(device)
    except (ValueError, RuntimeError):
        pass


def peak_memory(device):
    """`(MiB, source)`: the device allocator's peak, or the process's peak resident memory where it counts none."""
    try:
        peak = tf.config.experimental.get_memory_info(device)["peak"]
    except (ValueError, RuntimeError):
        peak = 0
    if peak:
        return round(peak / 2**20, 1), f"get_memory_info({device})"
    return round(report.peak_rss_mb(), 1), "ru_maxrss (process)"


def is_out_of_memory(error):
    return isinstance(error, tf.errors.ResourceExhaustedError) or "out of memory" in str(error).lower() or (
        "RESOURCE_EXHAUSTED" in str(error))


# --------------------------------------------------------------------------------------------------------
# The run's configuration and the models, built as `byol-pretrain` builds them
# --------------------------------------------------------------------------------------------------------


def pretrain_config(sizes, replicas=1):
    """The `imagenet-resnet50` preset as `cli.pretrain.resolve_config` + `experiment.resolve` would leave it, at `sizes`."""
    from byol_keras.presets import get_preset

    overrides = {"image_size": sizes["size"], "encoder": sizes["encoder"]}
    if sizes["hidden"]:
        overrides.update(projection_hidden_dim=sizes["hidden"], prediction_hidden_dim=sizes["hidden"])
    if sizes["projection_dim"]:
        overrides["projection_dim"] = sizes["projection_dim"]
    config = get_preset(PRESET, **overrides)
    config.update(seed=0, steps_per_epoch=1000, total_steps=100_000, sync_bn=replicas > 1)
    return config


def byol_model(config, strategy, augment, jit_compile):
    """`experiment.make_model` itself, with the views made on the device and this configuration's XLA choice."""
    from byol_keras.experiment import make_model

    return make_model(dict(config, jit_compile=jit_compile), strategy, NUM_CLASSES if config["probe"] else 0,
                      device_views=augment)


class DeviceNormalize(keras.layers.Layer):
    """uint8 crops -> ImageNet-normalised float32 on the device (the supervised step's input, as BYOL's views)."""

    def __init__(self, **kwargs):
        super().__init__(dtype="float32", **kwargs)

    def call(self, images):
        from byol_keras.preprocessing import normalize

        return normalize(images)


def supervised_model(config, jit_compile):
    """The same encoder with a softmax head: `transfer.classifier_on_encoder` and `train_classifier`'s loss."""
    from byol_keras.encoders import build_encoder
    from byol_keras.transfer import classifier_on_encoder

    size = config["image_size"]
    classifier = classifier_on_encoder(build_encoder(config["encoder"], size), NUM_CLASSES, freeze=False,
                                       image_size=size)
    inputs = keras.Input((size, size, 3), dtype="uint8")
    # Logits in float32 under a mixed policy (Keras' advice; the top-1 metric's `in_top_k` needs them).
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(classifier(DeviceNormalize()(inputs)))
    model = keras.Model(inputs, logits, name="supervised")
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1")],
                  jit_compile=jit_compile)
    return model


def random_crops(batch, size, num_classes=NUM_CLASSES):
    """A repeated batch shaped as `pretrain_dataset(..., views_on="device")` yields: `(crops1, crops2, labels)`."""
    crops = tf.random.stateless_uniform((2, batch, size, size, 3), (0, 0), 0, 256, tf.int32)
    crops = tf.cast(crops, tf.uint8)
    labels = tf.random.stateless_uniform((batch,), (0, 1), 0, num_classes, tf.int32)
    return tf.data.Dataset.from_tensors((crops[0], crops[1], labels)).repeat()


# --------------------------------------------------------------------------------------------------------
# The photo folder of the input side
# --------------------------------------------------------------------------------------------------------


def photo_folder(destination, count, width, height):
    """JPEGs of `width` x `height` in 10 class folders: CIFAR-10 upscaled (`benchmarks.photos`), or smooth
    random images where the CIFAR-10 folder is not beside the repository (a GPU host with the code alone)."""
    from PIL import Image

    per_class = max(1, count // 10)
    if os.path.isdir(os.path.join(report.DEFAULT_CIFAR, "train")):
        from benchmarks.photos import make_photos

        return make_photos(destination, per_class=per_class, width=width, height=height), "cifar10 upscaled"
    rng = np.random.default_rng(0)
    for label in range(10):
        folder = os.path.join(destination, f"class{label}")
        os.makedirs(folder, exist_ok=True)
        for index in range(per_class):
            target = os.path.join(folder, f"{index:05d}.jpg")
            if os.path.exists(target):
                continue
            # A coarse random grid upscaled: smooth like a photograph (noise would decode slower than any photo).
            coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
            image.save(target + ".tmp", format="JPEG", quality=90)
            os.replace(target + ".tmp", target)
    return destination, "smooth random images"


# --------------------------------------------------------------------------------------------------------
# Timing under the budget
# --------------------------------------------------------------------------------------------------------


class Budget:
    """The run's deadline; a watchdog ends the process there, after printing what it interrupted and the summary."""

    def __init__(self, seconds, summary):
        self.start = time.perf_counter()
        self.deadline = self.start + seconds
        self.seconds = seconds
        self.summary = summary
        self.current = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def left(self):
        return self.deadline - time.perf_counter()

    def _expire(self):
        with self._lock:
            print(json.dumps({"benchmark": "budget_exhausted", "budget_s": self.seconds,
                              "interrupted": self.current}), flush=True)
            print_summary(self.summary, cut_short=True)
            sys.stdout.flush()
            os._exit(0)

    def emit(self, *args, **kwargs):
        """`report.emit`, never interleaved with the watchdog's last lines."""
        with self._lock:
            return report.emit(*args, **kwargs)

    def cancel(self):
        self._timer.cancel()


class _Timed(keras.callbacks.Callback):
    """Times every epoch of one `fit`; stops it when the next epoch would end after `share_end` (after at
    least one timed epoch) or after the budget's deadline."""

    def __init__(self, budget, share_end):
        super().__init__()
        self.budget, self.share_end, self.seconds = budget, share_end, []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        end = time.perf_counter() + self.seconds[-1]  # the warm-up's (epoch 0) overestimates: it compiles
        if end > self.budget.deadline or (epoch >= 1 and end > self.share_end):
            self.model.stop_training = True


def time_fit(model, dataset, batch, steps, runs, budget, share_end):
    """`(images/s per timed epoch, warm-up seconds)` of one `fit` of `1 + runs` epochs of `steps` steps.

    The first epoch (tracing, XLA compilation, the pipeline's start) is not counted. One `fit` keeps one
    iterator over the dataset, as `byol-pretrain` does: a new `fit` per epoch would restart the pipeline.
    """
    timer = _Timed(budget, share_end)
    model.fit(dataset, epochs=1 + runs, steps_per_epoch=steps, callbacks=[timer], verbose=0, shuffle=False)
    return [batch * steps / s for s in timer.seconds[1:]], timer.seconds[0]


# --------------------------------------------------------------------------------------------------------
# The configurations
# --------------------------------------------------------------------------------------------------------


class Run:
    """One invocation: sizes, devices, budget, and the figures gathered for the summary."""

    def __init__(self, args, sizes, gpus):
        self.args, self.sizes, self.gpus = args, sizes, gpus
        self.devices = device_names(gpus)
        self.memory_device = "GPU:0" if gpus else "CPU:0"
        self.summary = {"devices": device_description(gpus), "tiny": args.tiny, "budget_s": args.budget_s,
                        "byol_step": [], "supervised_step": [], "scaling": None, "input": None, "skipped": []}
        self.budget = Budget(args.budget_s, self.summary)
        self.slowest_warmup = 0.0

    def share_end(self, remaining_configs):
        return time.perf_counter() + max(self.budget.left(), 0) / max(remaining_configs, 1)

    def skip(self, name, config, reason):
        line = {"benchmark": "skipped", "what": name, "config": config, "reason": reason}
        self.summary["skipped"].append({"what": name, **config})
        with self.budget._lock:
            print(json.dumps(line), flush=True)

    def fits(self, name, config):
        """Whether a configuration can start: enough budget left for the slowest warm-up so far."""
        left = self.budget.left()
        if left < max(self.slowest_warmup, 1.0):
            self.skip(name, config, f"budget: {left:.0f} s left, the slowest warm-up so far took "
                                    f"{self.slowest_warmup:.0f} s")
            return False
        return True

    def config(self, precision, jit, replicas=1):
        return {"precision": precision, "jit_compile": jit, "replicas": replicas, "size": self.sizes["size"],
                "encoder": self.sizes["encoder"]["name"], "steps": self.sizes["steps"]}

    def measure(self, name, make, precision, jit, candidates, data, remaining, replicas=1, keep=False, **extra):
        """Build and time the first of `candidates` (batches per device) that does not run out of memory.

        Args:
            name: str, the line's `benchmark`.
            make: callable `batch -> compiled keras.Model`, called under the `precision` policy.
            precision, jit: the dtype policy and `jit_compile` (recorded; `make` applies the latter).
            candidates: batches per device, largest first.
            data: callable `global batch -> tf.data.Dataset`.
            remaining: int, configurations left including this one (its share of the budget).
            replicas: int, the strategy's replicas inside `make`. Defaults to 1.
            keep: bool, return the model too. Defaults to False.
            **extra: more fields for the line.

        Returns:
            `(line or None, model or None)`: None for the line when it was skipped (out of memory, budget).
        """
        from byol_keras.distribute import set_precision

        config = self.config(precision, jit, replicas)
        self.budget.current = {"what": name, **config}
        share_end = self.share_end(remaining)
        set_precision(precision)
        tried = []
        try:
            for batch in candidates:
                reset_peak(self.memory_device)
                try:
                    model = make(batch)
                    rates, warmup = time_fit(model, data(batch * replicas), batch * replicas, self.sizes["steps"],
                                             self.sizes["runs"], self.budget, share_end)
                    break
                except Exception as error:  # noqa: BLE001: out of memory is told apart
                    if not is_out_of_memory(error):
                        raise
                    tried.append(batch)
                    model = None
                    keras.backend.clear_session()
                    gc.collect()
            else:
                self.skip(name, config, f"out of memory at every batch per device of {list(candidates)}")
                return None, None
        finally:
            set_precision("float32")
        self.slowest_warmup = max(self.slowest_warmup, warmup)
        memory, source = peak_memory(self.memory_device)
        config.update(batch_per_device=batch, global_batch=batch * replicas, out_of_memory_at=tried)
        if not rates:
            self.skip(name, config, f"budget: the warm-up ({warmup:.0f} s) left no time for a timed epoch")
            return None, (model if keep else None)
        line = self.budget.emit(name, config, rates, "images/s", warmup_s=round(warmup, 1), peak_memory_mb=memory,
                                memory_source=source, **extra)
        return line, (model if keep else None)


def run(args):
    """Every configuration in the order of `plan`, each printed as it finishes; returns the summary dict."""
    gpus = tf.config.list_physical_devices("GPU")
    if args.cpu_devices and not gpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices)
    if args.threads:
        report.set_threads(args.threads)
    if args.tiny is None:
        args.tiny = not gpus
    sizes = dict(TINY if args.tiny else FULL)
    for key in ("size", "steps", "runs"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    if args.batches:
        sizes["batches"] = tuple(args.batches)
    if args.encoder:
        sizes["encoder"] = json.loads(args.encoder) if args.encoder.startswith("{") else {"name": args.encoder}
    precisions = tuple(args.precisions or supported_precisions(gpus))
    jits = tuple(bool(int(j)) for j in (args.jit or ("1", "0")))

    from byol_keras.views import BYOLAugment
    from byol_keras.distribute import resolve_jit_compile

    r = Run(args, sizes, gpus)
    config = pretrain_config(sizes)
    augment = BYOLAugment(config["image_size"], blur=config["blur"], seed=config["seed"], **config["augment"])
    # XLA's choice outer: after the first, the other precisions with the same XLA choice come next.
    first, rest = (precisions[0], jits[0]), [(p, j) for j in jits for p in precisions][1:]
    multi = len(r.devices) > 1

    def named(kind, precision, jit):
        return f"{kind} {precision} {'xla' if jit else 'no-xla'}"

    plan = ([named("byol_step", *first), "input", named("supervised_step", *first)] + (["scaling"] if multi else [])
            + [named(kind, *c) for c in rest for kind in ("byol_step", "supervised_step")])
    with r.budget._lock:
        print(json.dumps({"benchmark": "plan", "devices": r.summary["devices"], "tiny": args.tiny,
                          "precisions": precisions, "jit_compile": jits, "sizes": sizes, "budget_s": args.budget_s,
                          "order": plan}), flush=True)
    remaining = len(plan)

    def byol(jit):
        return lambda batch: byol_model(config, tf.distribute.get_strategy(), augment, jit)

    def supervised(jit):
        return lambda batch: supervised_model(config, jit)

    def crops(batch):
        return random_crops(batch, sizes["size"])

    def view1(batch):
        return random_crops(batch, sizes["size"]).map(lambda c1, c2, labels: (c1, labels))

    def byol_step(precision, jit, keep=False, remaining=1):
        line = model = None
        if r.fits("byol_step", r.config(precision, jit)):
            line, model = r.measure("byol_step", byol(jit), precision, jit, sizes["batches"], crops,
                                    remaining, keep=keep)
        return line, model

    def supervised_after(line, precision, jit, remaining):
        if line is None:
            return
        if not r.fits("supervised_step", r.config(precision, jit)):
            return
        batch = line["config"]["batch_per_device"]
        sup, _ = r.measure("supervised_step", supervised(jit), precision, jit, (batch,), view1, remaining,
                           byol_step_median=line["median"])
        if sup is not None:
            ratio = line["median"] / sup["median"]
            r.summary["supervised_step"].append({"precision": precision, "jit_compile": jit, "batch": batch,
                                                 "images_per_s": sup["median"], "byol_to_supervised": round(ratio, 3)})
            with r.budget._lock:
                print(json.dumps({"benchmark": "byol_to_supervised", "precision": precision, "jit_compile": jit,
                                  "batch_per_device": batch, "byol_images_per_s": line["median"],
                                  "supervised_images_per_s": sup["median"], "ratio": round(ratio, 3),
                                  "flops_ratio": FLOPS_RATIO, "bar": BAR, "meets_bar": ratio >= BAR}), flush=True)

    def record_byol(line):
        if line is not None:
            r.summary["byol_step"].append({k: line["config"][k] for k in ("precision", "jit_compile",
                                                                             "batch_per_device")}
                                          | {"images_per_s": line["median"], "peak_memory_mb": line["peak_memory_mb"]})

    # 1. The configuration expected fastest, kept for the input side.
    line, model = byol_step(*first, keep=True, remaining=remaining)
    remaining -= 1
    record_byol(line)
    # 2. The input side: the pipeline alone, then the step fed from it.
    if line is not None and r.fits("input", {"size": sizes["size"]}):
        input_side(r, args, sizes, augment, model, line, first)
    remaining -= 1
    del model
    keras.backend.clear_session()
    gc.collect()
    # 3. The supervised ratio.
    supervised_after(line, *first, remaining)
    remaining -= 1
    # 4. Scaling over the devices.
    if multi:
        batch = line["config"]["batch_per_device"] if line else sizes["batches"][-1]
        scaling(r, sizes, augment, first[0], batch, remaining, resolve_jit_compile)
        remaining -= 1
    # 5. The rest of the precisions and XLA choices.
    for precision, jit in rest:
        line, _ = byol_step(precision, jit, remaining=remaining)
        record_byol(line)
        remaining -= 1
        supervised_after(line, precision, jit, remaining)
        remaining -= 1
        keras.backend.clear_session()
        gc.collect()
    r.budget.cancel()
    with r.budget._lock:
        print_summary(r.summary)
    return r.summary


def input_side(r, args, sizes, augment, model, line, first):
    """The pipeline alone on the host, then the kept model's step fed from it; which side is the bottleneck."""
    from byol_keras.data import pretrain_dataset
    from byol_keras.sources import load_source

    r.budget.current = {"what": "input"}
    width, height = sizes["photo_size"]
    destination = args.photos_dir or os.path.join(tempfile.gettempdir(), f"byol_keras_gpu_photos_{width}x{height}")
    batch = line["config"]["batch_per_device"]
    start = time.perf_counter()
    folder, made_from = photo_folder(destination, max(sizes["photos"], 2 * batch), width, height)
    photos_s = time.perf_counter() - start
    # Not verified and not cached: the per-image path, every file decoded every batch, as ImageNet's are.
    source = load_source(folder, verify=False)
    dataset = pretrain_dataset(source, augment, batch, seed=0, cache=False, repeat=True, views_on="device")
    batches = iter(dataset)
    next(batches)  # start-up and the first batch are not counted
    pipeline = []
    for run in range(sizes["runs"]):
        if run and pipeline and time.perf_counter() + batch * sizes["steps"] / pipeline[-1] > r.budget.deadline:
            break
        begin = time.perf_counter()
        for _ in range(sizes["steps"]):
            next(batches)
        pipeline.append(batch * sizes["steps"] / (time.perf_counter() - begin))
    del batches
    rates, _ = time_fit(model, dataset, batch, sizes["steps"], sizes["runs"], r.budget, r.budget.deadline)
    if not rates:
        r.skip("input", {"size": sizes["size"]}, "budget: no time for the step fed from the pipeline")
        return
    step_alone = line["median"]
    pipeline_median = report.summary(pipeline)["median"]
    bound = "host" if pipeline_median < step_alone else "device"
    config = {"size": sizes["size"], "batch": batch, "precision": first[0], "jit_compile": first[1],
              "photos": source.num_examples, "photo_size": [width, height], "made_from": made_from,
              "views_on": "device", "host_cpus": os.cpu_count()}
    fed = r.budget.emit("input", config, rates, "images/s", pipeline_alone=report.summary(pipeline),
                        step_alone=step_alone, fed_to_step_alone=round(report.summary(rates)["median"] / step_alone, 3),
                        bound=bound, photos_made_s=round(photos_s, 1))
    r.summary["input"] = {"pipeline_images_per_s": pipeline_median, "fed_step_images_per_s": fed["median"],
                          "step_alone_images_per_s": step_alone, "bound": bound, "host_cpus": os.cpu_count()}


def scaling(r, sizes, augment, precision, batch, remaining, resolve_jit_compile):
    """MirroredStrategy on the first device and on all, synchronised BatchNorm, the same batch per device."""
    lines = []
    everywhere = tf.distribute.MirroredStrategy(devices=r.devices)
    jit, reason = resolve_jit_compile(everywhere)  # off with several replicas (Keras 3.15 / TF 2.21)
    for strategy in (tf.distribute.MirroredStrategy(devices=r.devices[:1]), everywhere):
        replicas = strategy.num_replicas_in_sync
        config = pretrain_config(sizes, replicas=2)  # sync_bn on for both: the same computation
        if not r.fits("scaling", r.config(precision, jit, replicas)):
            return

        def make(b, strategy=strategy, config=config):
            return byol_model(config, strategy, augment, jit)

        line, _ = r.measure("scaling", make, precision, jit, (batch,), lambda b: random_crops(b, sizes["size"]),
                            remaining, replicas=replicas, jit_reason=reason, sync_bn=True)
        remaining = max(remaining - 1, 1)
        if line is None:
            return
        lines.append(line)
        keras.backend.clear_session()
        gc.collect()
    one, all_ = lines
    ratio = all_["median"] / one["median"]
    n = len(r.devices)
    r.summary["scaling"] = {"devices": n, "images_per_s_1": one["median"], "images_per_s_n": all_["median"],
                            "scaling_ratio": round(ratio, 3), "efficiency": round(ratio / n, 3)}
    with r.budget._lock:
        print(json.dumps({"benchmark": "scaling_ratio", "devices": n, "batch_per_device": batch,
                          "precision": precision, "jit_compile": jit, "scaling_ratio": round(ratio, 3),
                          "efficiency": round(ratio / n, 3),
                          "devices_share_cores": not r.gpus}), flush=True)


def print_summary(summary, cut_short=False):
    print(json.dumps({"benchmark": "summary", "cut_short": cut_short, **summary,
                      "machine": report.machine(), "versions": report.versions()}), flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", dest="budget_s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"seconds for every configuration, from the start of the run (default {DEFAULT_BUDGET_S})")
    tiny = parser.add_mutually_exclusive_group()
    tiny.add_argument("--tiny", dest="tiny", action="store_true", default=None,
                      help="tiny sizes (the default when no GPU is visible)")
    tiny.add_argument("--no-tiny", dest="tiny", action="store_false", help="the full sizes even without a GPU")
    parser.add_argument("--size", type=int, help="view side (default 224; tiny 32)")
    parser.add_argument("--batches", type=int, nargs="+",
                        help="batches per device to try, largest first (default 256 128 64; tiny 16 8)")
    parser.add_argument("--encoder", help="'resnet50' (default), 'resnet18', 'convnet' or a JSON encoder spec "
                                          "(tiny: {\"name\": \"convnet\", \"widths\": [4, 8, 16]})")
    parser.add_argument("--precisions", nargs="+", choices=("float32", "mixed_float16", "mixed_bfloat16"),
                        help="dtype policies (default: float32 and the mixed ones the device runs natively)")
    parser.add_argument("--jit", nargs="+", choices=("1", "0"), help="XLA on (1), off (0); default both, on first")
    parser.add_argument("--steps", type=int, help="steps per timed epoch (default 20; tiny 2)")
    parser.add_argument("--runs", type=int, help="timed epochs per configuration (default 3; tiny 1)")
    parser.add_argument("--cpu-devices", dest="cpu_devices", type=int, default=0,
                        help="without a GPU: split the CPU into this many logical devices (the scaling code path)")
    parser.add_argument("--threads", type=int, help="TensorFlow's intra/inter-op threads (default: its own)")
    parser.add_argument("--photos-dir", dest="photos_dir", help="where the photo folder is made (default: a temp dir)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_args())
