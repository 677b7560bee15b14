"""Pretrain an image encoder with BYOL.

    byol-pretrain --preset demo
    byol-pretrain --preset cifar10-resnet18 --data path/to/cifar10 --epochs 100 --out runs/cifar10
    byol-pretrain --preset imagenet-resnet50 --data imagenet2012 --data-dir /data/tfds --out runs/in1k
    byol-pretrain --preset cifar10-resnet18 --data path/to/xrays --channels 1 --out runs/xrays   # one channel

Flags left unset keep the preset's value (`byol_keras/presets.py`). The run directory (`--out`, default
`runs/<preset>`) receives:

    config.json      the resolved configuration (preset + flags + derived values, oneDNN's state, versions, XLA),
                     written before the first step; "resumes" lists what each resume changed
    logs/            TensorBoard: per-step loss, τ, learning rate, representation_std; kNN; views; projector
    backup/          the newest --keep-backups (2) fault-tolerance backups, each with its weights' checksum and a
                     copy of config.json (running the same command again resumes from the newest that reads)
    run.lock         held while a run uses the folder (a second command on it stops, naming the holder)
    checkpoints/     latest.keras, the full BYOL model, saved every epoch (every `--backup-every` steps if longer)
    model.keras      the final BYOL model (online and target networks, optimizer state)
    summary.json     kNN top-1 before and after, losses, wall time
and the encoder is exported for TF Serving to `--export` (default `saved_models/<preset>/<version>`).

SIGTERM or SIGINT stops a run after the step in flight, with a backup of it (exit status 143 / 130). `--restart`
starts a run folder over, discarding what it holds. Running the command again on a run folder with a backup resumes
the run, with the configuration of its config.json: a resume may change --epochs (to extend the run), --knn-every, --verbose, --backup-every,
--export, --strategy and --data-dir; every other flag must give the run's own value, or the command stops
with an error naming the flag, the run's value and the one given (docs/design.md, "Resuming a run").
"""

import argparse
import dataclasses
import json
import os
import signal
import sys
import time

from byol_keras import cli
from byol_keras.run_folder import CONFIG_FILENAME

OPTIMIZERS = ("lars", "sgd-l2", "sgd")


def build_parser(prog="byol-pretrain"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", choices=_preset_names(), metavar="PRESET",
                        help="named configuration: " + ", ".join(_preset_names()) + " (default: demo)")
    parser.add_argument("--data", type=cli.data_source,
                        help="TFDS name, image folder or 'digits' (default: the preset's)")
    parser.add_argument("--data-dir", dest="data_dir", help="TFDS data directory")
    parser.add_argument("--epochs", type=cli.positive_int)
    parser.add_argument("--batch-size", dest="batch_size", type=cli.positive_int, help="global batch size")
    parser.add_argument("--image-size", dest="image_size", type=cli.positive_int)
    parser.add_argument("--channels", type=int, choices=(3, 1),
                        help="3: RGB (grayscale files replicated; the presets' default); 1: every image kept as one "
                             "channel (its luma: X-rays, scans, microscopy), through the views (no saturation, hue "
                             "or grayscale stage), the encoder, the kNN monitor and the export")
    parser.add_argument("--learning-rate", dest="base_learning_rate", type=cli.positive_float,
                        help="base LR for batch 256")
    parser.add_argument("--weight-decay", dest="weight_decay", type=cli.non_negative_float)
    parser.add_argument("--base-tau", dest="base_tau", type=cli.unit_interval)
    parser.add_argument("--optimizer", choices=OPTIMIZERS)
    parser.add_argument("--encoder",
                        help="resnet18, resnet50, convnet, or keras_hub:<preset or local preset directory>[:pooling] "
                             "(a KerasHub backbone, its weights a warm start; default: the preset's)")
    parser.add_argument("--width", type=cli.positive_int,
                        help="network width: ResNet-18's first stage (64 = the standard network), a ConvNet's first layer")
    parser.add_argument("--limit-per-class", dest="limit_per_class", type=cli.positive_int,
                        help="pretrain on the first N images of each class")
    parser.add_argument("--knn-every", dest="knn_every_n_epochs", type=cli.positive_int,
                        help="kNN monitor every N epochs")
    parser.add_argument("--steps-per-epoch", dest="steps_per_epoch", type=cli.positive_int,
                        help="cap the steps of each epoch (quick runs)")
    parser.add_argument("--strategy", default="auto", choices=("auto", "mirrored", "multi-worker", "tpu", "one-device"),
                        help="tf.distribute strategy (auto: MirroredStrategy when >1 GPU is visible)")
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16", "mixed_float16"))
    parser.add_argument("--sync-bn", dest="sync_bn", action="store_true",
                        help="cross-replica BatchNorm in the encoder even on one replica (always on with several)")
    parser.add_argument("--backup-every", dest="backup_every", type=cli.positive_int,
                        help="global steps between fault-tolerance backups (default: steps per epoch, within [100, 1000])")
    parser.add_argument("--keep-backups", dest="keep_backups", type=cli.positive_int, default=2,
                        help="complete backups to keep, the newest (default: 2: a damaged one leaves another)")
    parser.add_argument("--restart", action="store_true",
                        help="start the run in --out over from step 0, discarding its backups, record and logs "
                             "(without it, a run folder with a backup is resumed)")
    parser.add_argument("--out", help="run directory (default: runs/<preset>)")
    parser.add_argument("--export", help="TF Serving base path (default: saved_models/<preset>; 'none' to skip)")
    parser.add_argument("--seed", type=cli.non_negative_int, default=0)
    parser.add_argument("--max-pixels", dest="max_pixels", type=cli.positive_int,
                        help="skip images above this many pixels without decoding them, and refuse them in the "
                             "export (default: 89478485, Pillow's limit)")
    parser.add_argument("--verbose", type=cli.verbosity, default="auto", metavar="{auto,0,1,2}",
                        help="progress: auto (default) one bar for the whole run on a terminal, a line every few "
                             "epochs in a log file; or Keras' own: 0 silent, 1 a bar per epoch, 2 a line per epoch")
    cli.add_debug_flag(parser)
    return parser


def _preset_names():
    from byol_keras.presets import PRESETS

    return sorted(PRESETS)


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def resolve_config(args):
    """Preset + command-line overrides + derived values, as one JSON-serialisable dict."""
    from byol_keras.presets import get_preset

    overrides = {
        key: getattr(args, key)
        for key in ("data", "data_dir", "epochs", "batch_size", "image_size", "base_learning_rate",
                    "weight_decay", "base_tau", "optimizer", "limit_per_class", "knn_every_n_epochs", "channels")
    }
    config = get_preset(args.preset, **overrides)
    if config["channels"] != 3:
        from byol_keras.views.paper import RGB_ONLY

        # Saturation, hue and the grayscale stage are RGB notions: one-channel views go without them, whatever
        # the preset's RGB views say (recorded as such in config.json).
        config["augment"] = dict(config["augment"], **RGB_ONLY)
    if args.encoder is not None:
        from byol_keras.encoders import encoder_spec

        config["encoder"] = encoder_spec(args.encoder)
    if args.width is not None:
        config["encoder"] = with_width(config["encoder"], args.width)
    config["seed"] = args.seed
    config["max_pixels"] = args.max_pixels  # None: the library's default, resolved (and recorded) by `run`
    config.update(strategy=args.strategy, precision=args.precision, sync_bn=args.sync_bn, backup_every=args.backup_every,
                  keep_backups=args.keep_backups)
    config["steps_per_epoch_cap"] = args.steps_per_epoch
    config["run_dir"] = os.path.abspath(args.out or os.path.join("runs", args.preset))
    export = args.export or os.path.join("saved_models", args.preset)
    config["export_base_path"] = None if export.lower() == "none" else os.path.abspath(export)
    return config


def with_width(spec, width):
    """The encoder spec with its width set: ResNet-18's first stage, or a ConvNet's first layer (doubling)."""
    if spec["name"] not in ("resnet18", "convnet"):
        raise ValueError(
            f"`width` sets the width of byol_keras' resnet18 and convnet; the {spec['name']} encoder has its own. "
            f"Received: width={width}, encoder={spec}"
        )
    if spec["name"] == "convnet":
        depth = len(spec.get("widths", (32, 64, 128)))
        return dict(spec, widths=tuple(width * 2**i for i in range(depth)))
    return dict(spec, width=width)


def build_encoder(spec, image_size, channels=3):
    """`byol_keras.encoders.build_encoder`, where the encoders are built."""
    from byol_keras import encoders

    return encoders.build_encoder(spec, image_size, channels)


def build_optimizer(config, steps_per_epoch, total_steps, model=None):
    """LARS or SGD with the warm-up + cosine schedule at the scaled learning rate.

    - `lars`: biases and BatchNorm parameters (rank ≤ 1) are excluded from weight decay and trust-ratio
      adaptation, as in the paper. Under LARS a weight moves by about lr·η = 1e-3·lr of its norm per
      step, which the paper's 300k steps absorb but a short run does not.
    - `sgd-l2`: SGD with momentum and *coupled* L2 decay on every variable, `torch.optim.SGD` exactly
      (the CIFAR baselines: lightly, solo-learn).
    - `sgd`: `keras.optimizers.SGD`, whose weight decay is decoupled (`w -= lr·wd·w`).

    Deviation from the paper, for all three: the online linear probe (a monitor, not part of BYOL) gets
    no weight decay and no trust ratio.
    """
    import keras

    from byol_keras.optimizers import LARS, excluded_by_default
    from byol_keras.schedules import WarmupCosine, scale_learning_rate

    if config["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer. Expected one of {OPTIMIZERS}. Received: optimizer={config['optimizer']!r}")
    learning_rate = scale_learning_rate(config["base_learning_rate"], config["batch_size"])
    warmup_steps = min(config["warmup_epochs"] * steps_per_epoch, total_steps - 1)
    schedule = WarmupCosine(learning_rate, warmup_steps, total_steps)
    probe = [] if model is None or getattr(model, "probe", None) is None else model.probe.trainable_variables
    if config["optimizer"] == "lars":
        exclude = None
        if probe:
            exclude = [v.path for v in model.trainable_variables if excluded_by_default(v)]
            exclude += [v.path for v in probe]
        return LARS(schedule, momentum=config["momentum"], weight_decay=config["weight_decay"],
                    trust_coefficient=config["trust_coefficient"], exclude_from_adaptation=exclude,
                    clip_lr=config["clip_lr"], trust_ratio=config["trust_ratio"])
    if config["optimizer"] == "sgd-l2":
        return LARS(schedule, momentum=config["momentum"], weight_decay=config["weight_decay"],
                    trust_coefficient=None, exclude_from_adaptation=[v.path for v in probe])
    optimizer = keras.optimizers.SGD(schedule, momentum=config["momentum"], weight_decay=config["weight_decay"])
    if probe:
        optimizer.exclude_from_weight_decay(var_list=probe)
    return optimizer


class NonFiniteLossError(RuntimeError):
    """Training stopped at a non-finite loss; the last good backup is kept."""


# -- Resuming: the run's config.json is the truth --------------------------------------------------------------

# A run folder with a backup is resumed with the configuration in its config.json. A resume may change these
# (config key -> flag), each change recorded in config.json's "resumes" (docs/design.md, "Resuming a run"):
RESUME_MAY_CHANGE = {
    "epochs": "--epochs",  # extends the run; the learning rate's and τ's schedules stretch to the new end
    "knn_every_n_epochs": "--knn-every",  # the monitor only
    "verbose": "--verbose",
    "backup_every": "--backup-every",
    "keep_backups": "--keep-backups",
    "export_base_path": "--export",
    "strategy": "--strategy",  # how the steps are spread; the BatchNorm they compute is checked (sync_bn)
    "data_dir": "--data-dir",  # where the TFDS files are; what they hold is checked (num_examples)
}
# What the training computes: a resume must give the run's own value (config key -> flag), or it is refused.
RESUME_MUST_KEEP = {
    "preset": "--preset",
    "data": "--data",
    "limit_per_class": "--limit-per-class",
    "batch_size": "--batch-size",
    "steps_per_epoch_cap": "--steps-per-epoch",
    "image_size": "--image-size",
    "channels": "--channels",
    "encoder": "--width",
    "optimizer": "--optimizer",
    "base_learning_rate": "--learning-rate",
    "weight_decay": "--weight-decay",
    "base_tau": "--base-tau",
    "seed": "--seed",
    "precision": "--precision",
    "max_pixels": "--max-pixels",
}
# What a config.json written before a field existed meant by its absence.
BEFORE_A_FIELD = {"channels": 3}  # every run read RGB
# Facts of one launch, not of the run (where the folder is now, the machine, the installed versions): found
# again by every launch, and recorded.
LAUNCH_VALUES = ("run_dir", "replicas", "onednn", "cpu_allocator", "jit_compile", "jit_compile_reason", "versions")
BACKUP_DIR = "backup"


def _as_json(value):
    """`value` as config.json holds it (tuples become lists), to compare a fresh value with a stored one."""
    return json.loads(json.dumps(value))


def _flag_value(key, value, encoder_kind=False):
    """How the flag of config `key` spells `value`: an encoder spec's width (or with `encoder_kind`, its `--encoder`
    value), "unset" for None."""
    if key == "encoder" and isinstance(value, dict) and encoder_kind:
        value = f"keras_hub:{value['preset']}" if value.get("name") == "keras_hub" else value.get("name")
    elif key == "encoder" and isinstance(value, dict):
        value = value.get("width", (value.get("widths") or [None])[0])
    return "unset" if value is None else value


def resume_config(requested, stored):
    """The configuration of a resumed run: the run's own (`stored`), with the changes a resume may make.

    Args:
        requested: dict, what this command asks for (`resolve_config`), not yet resolved by `run`.
        stored: dict, the run's config.json, written when the run (or its last resume) started.

    Returns:
        dict: `stored`, with the values of `RESUME_MAY_CHANGE` and the run folder taken from `requested`,
        `sync_bn` as requested (`resolve` checks the BatchNorm it gives against the run's), and any field
        `stored` lacks (a config.json from an older byol_keras) from `requested`. Everything else is the
        run's, even where this version's preset now says otherwise (printed).

    Raises:
        ValueError: a value of `RESUME_MUST_KEEP` differs from the run's; the message names each such flag
            with the run's value and this command's.
    """
    from byol_keras.decoding import DEFAULT_MAX_PIXELS

    requested = _as_json(dict(requested, max_pixels=requested.get("max_pixels") or DEFAULT_MAX_PIXELS))
    stored = dict(BEFORE_A_FIELD, **stored)
    differ = [key for key in RESUME_MUST_KEEP if key in stored and requested.get(key) != stored[key]]
    if "preset" in differ:
        differ = ["preset"]  # the other differences follow from it
    if differ:
        # An encoder of another kind is --encoder's difference; the same kind at another width, --width's.
        other_kind = "encoder" in differ and (requested.get("encoder") or {}).get("name") != stored["encoder"].get("name")
        flags = {key: "--encoder" if key == "encoder" and other_kind else RESUME_MUST_KEEP[key] for key in differ}

        def spelled(config):
            return " ".join(f"{flags[key]} {_flag_value(key, config.get(key), other_kind)}" for key in differ)

        raise ValueError(
            f"The run in {requested['run_dir']!r} has a backup, and resuming it must keep its "
            f"{', '.join(flags.values())}: the run has {spelled(stored)}, this command "
            f"asks for {spelled(requested)}. Give the run's values to resume it, or another --out to start a new run."
        )
    config = dict(stored)
    for key in (*RESUME_MAY_CHANGE, "run_dir", "sync_bn"):
        if key in requested:
            config[key] = requested[key]
    # Fields no flag sets (the preset's): the run's values stand even where this version's preset differs.
    kept = sorted(key for key in requested if key in stored and requested[key] != stored[key]
                  and key not in (*RESUME_MAY_CHANGE, *RESUME_MUST_KEEP, *LAUNCH_VALUES, "sync_bn"))
    if kept:
        print(f"Resuming with the run's own {', '.join(kept)} (from its {CONFIG_FILENAME}; this version's preset "
              "differs)")
    for key, value in requested.items():
        config.setdefault(key, value)
    return config


def _check_resume(config, stored, resumed):
    """The checks a resume needs the resolved values for, and the record of what it changed.

    Returns:
        The "resumes" list for config.json: the stored one, plus this resume's global step and changes.
    """
    if "num_examples" in stored and config["num_examples"] != stored["num_examples"]:
        raise ValueError(
            f"The run in {config['run_dir']!r} trained on {stored['num_examples']} images of {config['data']!r}; "
            f"this command finds {config['num_examples']}: the data is not the run's (--data, --data-dir, "
            "--limit-per-class). Give the run's data to resume it, or another --out to start a new run."
        )
    if "sync_bn" in stored and config["sync_bn"] != stored["sync_bn"]:
        raise ValueError(
            f"The run in {config['run_dir']!r} has sync_bn={stored['sync_bn']} (cross-replica BatchNorm), this "
            f"launch would have sync_bn={config['sync_bn']} ({config['replicas']} replica(s), --sync-bn "
            f"{'given' if config['sync_bn'] else 'not given'}): resume it "
            + ("with --sync-bn." if stored["sync_bn"] else "on one replica, without --sync-bn.")
        )
    if resumed["step"] > config["total_steps"]:
        raise ValueError(
            f"`epochs` must reach the run's backup at global step {resumed['step']}: {config['epochs']} epochs of "
            f"{config['steps_per_epoch']} steps end at step {config['total_steps']}, and a resume can extend a "
            f"run, not shorten it. Received: epochs={config['epochs']}"
        )
    fresh = _as_json(config)
    changed = {key: [stored[key], fresh[key]] for key in fresh
               if key in stored and key != "resumes" and fresh[key] != stored[key]}
    return list(stored.get("resumes", [])) + [{"step": resumed["step"], "changed": changed}]


# -- The run, step by step --------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunData:
    """What the `data` step gives the others: the training stream and the labelled arrays the monitors read."""

    source: object
    augment: object
    dataset: object
    knn_bank: tuple = None  # (normalised images, labels) of the training split
    knn_queries: tuple = None  # the same of the test split
    view_images: object = None  # uint8 images for the view grid
    projector_images: object = None  # uint8 query images for the embedding projector
    projector_labels: object = None


@dataclasses.dataclass
class Monitors:
    """What the `monitors` step gives `fit` and `finish`: the callbacks, and the ones they read back."""

    callbacks: list
    stopper: object
    knn: object = None
    random_init_path: str = None
    backup: object = None  # the StepBackup
    latest: object = None  # the LatestModel (checkpoints/latest.keras)


def run(config, restart=False):
    """Pretrain as `config` says; returns the summary dict (also written to `summary.json`).

    `config` (from `resolve_config`) is not changed. The run folder and the export folder are checked writable
    and the run folder locked (one run per folder) before any work. A run folder with a backup is resumed, with
    the configuration of its config.json and the changes a resume may make (`resume_config`); `restart=True`
    discards the folder's backups, record and logs first, saying what it discards. The run then goes through
    named steps, each reading the frozen configuration: `resolve` (the source, the derived values, config.json's
    content), `data`, `model`, `monitors`, `fit` and `finish`.

    Raises:
        StoppedBySignal: SIGTERM or SIGINT stopped the run after a backup of its last step.
        NonFiniteLossError: the loss became non-finite; the message names what is kept.
        WriteError, RunFolderInUse, BackupError, ValueError: named errors, before or during the run.
    """
    import contextlib

    import keras

    from byol_keras.cluster import is_chief, worker_dir
    from byol_keras.distribute import make_strategy, per_replica_batch_size, set_precision
    from byol_keras.durable import atomic_write_json, check_writable, run_lock

    started = time.time()
    config = dict(config)  # resolved below, then frozen; the caller's dict stays as it was given
    # Where the run writes, checked before any work: a read-only --export fails now, not after the run.
    check_writable(config["run_dir"], "--out")
    if config["export_base_path"]:
        check_writable(config["export_base_path"], "--export")
    keras.utils.set_random_seed(config["seed"])
    strategy = make_strategy(config["strategy"])
    # One run per run folder: the chief holds the lock until the run ends, however it ends.
    with (run_lock(config["run_dir"], warn=cli.print_warning) if is_chief(strategy) else contextlib.nullcontext()):
        if restart and is_chief(strategy):
            discard_run(config["run_dir"])
        config, resumed, stored = resume_or_start(config)
        per_replica_batch_size(config["batch_size"], strategy)  # a batch that does not split evenly is an error
        set_precision(config["precision"])

        config, source = resolve(config, strategy, resumed, stored)
        data = make_data(config, source, resumed)
        model = make_model(config, strategy, source.num_classes)
        # Only the chief writes the run directory; other workers write to a temporary one, removed after.
        with worker_dir(config["run_dir"], strategy) as out_dir:
            atomic_write_json(os.path.join(out_dir, CONFIG_FILENAME), dict(config), indent=2, sort_keys=True)
            monitors = make_monitors(config, data, out_dir, resumed)
            history = fit(config, model, data, monitors)
            summary = finish(config, model, history, data, monitors, out_dir, resumed, started)
    return summary


# What a run folder holds, besides its lock: what `--restart` discards.
RUN_FILES = (BACKUP_DIR, CONFIG_FILENAME, "checkpoints", "logs", "model.keras", "history.json", "summary.json",
             "knn_random_init.json")


def discard_run(run_dir):
    """`--restart`: delete what an earlier run left in `run_dir` (`RUN_FILES`), printing what it was."""
    import shutil

    from byol_keras.fault_tolerance import step_of_backup

    present = [name for name in RUN_FILES if os.path.lexists(os.path.join(run_dir, name))]
    if not present:
        return
    described = []
    for name in present:
        path = os.path.join(run_dir, name)
        if name == BACKUP_DIR:
            steps = sorted(s for s in map(step_of_backup, os.listdir(path)) if s is not None)
            described.append("no backup" if not steps else
                             f"the backup{'s' if len(steps) > 1 else ''} of global step{'s' if len(steps) > 1 else ''} "
                             + ", ".join(map(str, steps)))
        else:
            described.append(name + ("/" if os.path.isdir(path) else ""))
    print(f"--restart: discarding the earlier run in {run_dir}: " + "; ".join(described))
    for name in present:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def resume_or_start(config):
    """Whether this launch resumes a run: `(config, resumed, stored)`.

    A backup in the run folder means a resume (`latest_backup_state` names any damaged backup and uses the next
    older one; when none reads it raises `BackupError`), and the run's config.json says what the run is. A record
    that does not read stops the resume with an error naming it: flags never replace it.
    """
    from byol_keras.fault_tolerance import backup_record, latest_backup_state
    from byol_keras.run_folder import read_config

    resumed = latest_backup_state(os.path.join(config["run_dir"], BACKUP_DIR))
    if not resumed:
        return config, None, None
    try:
        stored = read_config(config["run_dir"])
    except (OSError, ValueError) as error:
        path = os.path.join(config["run_dir"], CONFIG_FILENAME)
        copy = os.path.join(resumed["path"], CONFIG_FILENAME)
        hint = (f"restore it from the backup's copy (cp {copy} {path})" if backup_record(resumed) is not None
                else "restore it")
        raise RunRecordError(
            f"The run's record {path} does not read ({error}). A resume takes the run's configuration from it, "
            f"never from the flags: {hint}, or start over with --restart (which discards the backup of global "
            f"step {resumed['step']})."
        ) from None
    return resume_config(config, stored), resumed, stored


class RunRecordError(ValueError):
    """The run folder's config.json does not read while a backup exists."""


def resolve(config, strategy, resumed=None, stored=None):
    """The `resolve` step: open the data, derive every value the run decides once, and freeze the configuration.

    Derived: the pixel limit, steps per epoch and in all, the number of images and replicas, the test crop
    fraction (the kNN monitor's and the export's), oneDNN's state, synchronised BatchNorm, the versions and the
    XLA choice. A resume reads the crop fraction from the run instead, checks that the data and the BatchNorm
    are the run's and that `epochs` does not end before its backup, and records what it changed.

    Returns:
        `(config, source)`: the frozen configuration (a read-only mapping, what config.json holds) and the
        training `Source`.
    """
    import types

    from byol_keras.data import run_source
    from byol_keras.decoding import DEFAULT_MAX_PIXELS
    from byol_keras.distribute import resolve_jit_compile
    from byol_keras.preprocessing import default_crop_fraction
    from byol_keras.onednn import allocator_state, onednn_state

    config = dict(config)
    # Images above the limit are skipped unread here and refused by the export: one limit for the run.
    config["max_pixels"] = config.get("max_pixels") or DEFAULT_MAX_PIXELS
    source = run_source(config)  # the same call as the benchmarks'
    batch_size = config["batch_size"]
    steps_per_epoch = source.num_examples // batch_size
    if config["steps_per_epoch_cap"]:
        steps_per_epoch = min(steps_per_epoch, config["steps_per_epoch_cap"])
    if steps_per_epoch == 0:
        raise ValueError(
            f"`batch_size` is larger than the dataset ({source.num_examples} images in {source.name}). "
            f"Received: batch_size={batch_size}"
        )
    config.update(
        steps_per_epoch=steps_per_epoch,
        total_steps=config["epochs"] * steps_per_epoch,
        num_examples=source.num_examples,
        replicas=strategy.num_replicas_in_sync,
        # The evaluation transform of the kNN monitor, and of the exported serving signature.
        crop_fraction=(stored or {}).get("crop_fraction") or default_crop_fraction(config["image_size"]),
        # TensorFlow's oneDNN kernels: on or off in this run, and whether the user or byol_keras chose.
        onednn=onednn_state(),
        # TensorFlow's CPU allocator: pooling (BFC or oneDNN's) or malloc, and who chose.
        cpu_allocator=allocator_state(),
        # Cross-replica BatchNorm, for the encoder and the heads alike: the paper's, with several replicas.
        sync_bn=bool(config["sync_bn"] or strategy.num_replicas_in_sync > 1),
        versions=_versions(),
        # What the kNN monitor queries: the test split, training images held out of its bank, or nothing.
        knn_queries=knn_queries(config, source),
    )
    # XLA for the training step (`distribute.resolve_jit_compile`: it follows oneDNN's state on a CPU).
    config["jit_compile"], config["jit_compile_reason"] = resolve_jit_compile(strategy)
    if stored is not None:
        config["resumes"] = _check_resume(config, stored, resumed)
    return types.MappingProxyType(config), source  # frozen: everything after this reads it


HELD_OUT = "held-out training images"


def knn_queries(config, source):
    """Where the kNN monitor's queries come from: "test" (the test split), `HELD_OUT`, or None (no monitor).

    An image folder without the test split's sub-folder would otherwise be read whole as its own test split:
    the queries would be the bank's own images (top-1 near 1.0, meaningless).
    """
    from byol_keras.sources import TFDS_NAMES

    if not (source.num_classes and config["test_split"]):
        return None
    data = config["data"]
    if data == "digits" or data.split("/")[0] in TFDS_NAMES or os.path.isdir(os.path.join(data, config["test_split"])):
        return "test"
    return HELD_OUT if source.labels is not None else None


def make_data(config, source, resumed=None):
    """The `data` step: the endless stream of view pairs, and the labelled arrays of the kNN monitor.

    The stream starts where the interrupted run stopped drawing: a resumed run sees the batches an
    uninterrupted run sees (docs/design.md, "Resuming the data"). Keras keeps one iterator across epochs when
    `steps_per_epoch` is set: a new iterator per epoch would refill the shuffle buffer and restart the view
    workers, which costs more than the training steps of a small dataset's epoch.
    """
    import numpy as np

    from byol_keras.data import run_views
    from byol_keras.fault_tolerance import batches_done
    from byol_keras.sources import load_source
    from byol_keras.subsets import held_out_queries, select

    image_size = config["image_size"]
    # The same call as the benchmarks' (byol_keras.data.run_views): they measure what this builds.
    augment, dataset = run_views(config, source, start_batch=batches_done(resumed, config["steps_per_epoch"]))
    data = RunData(source=source, augment=augment, dataset=dataset)
    if source.num_classes and config["knn_queries"]:
        # kNN bank (training images) and queries (the test split, or training images held out of the bank),
        # evaluation transform, kept in memory.
        crop = config["crop_fraction"]
        if config["knn_queries"] == HELD_OUT:
            queries = held_out_queries(source.labels, config["knn_queries_per_class"], config["seed"])
            bank_source, test_source = select(source, ~queries), select(source, queries)
            print(f"kNN monitor: {config['data']} has no {config['test_split']}/ split; its queries are "
                  f"{int(queries.sum())} training images held out of the bank (a seeded, class-balanced part; "
                  "still pretrained on, without labels)")
        else:
            bank_source = source
            test_source = load_source(config["data"], split=config["test_split"], data_dir=config["data_dir"],
                                      max_pixels=config["max_pixels"], channels=config["channels"])
        bank_raw, bank_x, bank_y = _labelled_arrays(bank_source, image_size, config["knn_bank_per_class"], crop)
        query_raw, query_x, query_y = _labelled_arrays(test_source, image_size,
                                                       None if config["knn_queries"] == HELD_OUT
                                                       else config["knn_queries_per_class"], crop)
        # A class-balanced sample of the queries for the embedding projector.
        order = np.argsort(np.arange(len(query_y)) % max(source.num_classes, 1), kind="stable")
        projector_idx = np.sort(order[: min(500, len(query_y))])
        data.knn_bank, data.knn_queries = (bank_x, bank_y), (query_x, query_y)
        data.view_images = bank_raw[:8]
        data.projector_images, data.projector_labels = query_raw[projector_idx], query_y[projector_idx]
    return data


def _labelled_arrays(source, image_size, per_class, crop_fraction):
    from byol_keras.preprocessing import normalize
    from byol_keras.eval_data import load_arrays

    images, labels = load_arrays(source, image_size, per_class, crop_fraction=crop_fraction)
    return images, normalize(images).numpy(), labels


def make_model(config, strategy, num_classes, device_views=None):
    """The `model` step: the encoder, BYOL (with the online probe when the data has labels), compiled.

    `device_views`: a views callable for BYOL to apply on the device (`augment_on="device"`), or None (the
    pipeline makes the views, as `byol-pretrain` does); `benchmarks.gpu` measures the device's views.
    """
    from byol_keras.byol import BYOL
    from byol_keras.layers import sync_batchnorm

    with strategy.scope():
        encoder = build_encoder(config["encoder"], config["image_size"], config["channels"])
        if config["sync_bn"]:
            encoder = sync_batchnorm(encoder)  # the paper's cross-replica BatchNorm
        model = BYOL(
            encoder,
            projection_dim=config["projection_dim"],
            projection_hidden_dim=config["projection_hidden_dim"],
            prediction_hidden_dim=config["prediction_hidden_dim"],
            base_tau=config["base_tau"],
            head_initializer=config["head_initializer"],
            total_steps=config["total_steps"],
            num_classes=num_classes if (config["probe"] and num_classes > 1) else None,
            synchronized_bn=config["sync_bn"],
            **({} if device_views is None else {"augment": device_views, "augment_on": "device"}),
        )
        optimizer = build_optimizer(config, config["steps_per_epoch"], config["total_steps"], model)
        model.compile(optimizer=optimizer, jit_compile=config["jit_compile"])
    return model


def make_monitors(config, data, out_dir, resumed=None):
    """The `monitors` step: the backup, the non-finite stop, the kNN monitor and TensorBoard, checkpoints,
    progress; in the order Keras runs them."""
    import keras

    from byol_keras import callbacks as monitors
    from byol_keras.fault_tolerance import LatestModel, StepBackup, StopOnNonFiniteLoss
    from byol_keras.progress import RunProgress

    # Backups every N global steps (write, then rename); running the same command again resumes from
    # the newest complete one with its global step (hence τ and the learning rate) and epoch.
    # By default once an epoch, but not more often than every 100 steps (tiny epochs would spend more time
    # writing backups than training) nor less often than every 1,000.
    steps_per_epoch = config["steps_per_epoch"]
    backup_every = config["backup_every"] or min(max(steps_per_epoch, 100), 1000)
    # Each backup keeps a copy of the run's record (config.json), from which a damaged one can be restored.
    backup = StepBackup(os.path.join(config["run_dir"], BACKUP_DIR), backup_every,
                        keep=config.get("keep_backups") or 2, record=dict(config))
    stopper = StopOnNonFiniteLoss()
    callbacks = [backup, stopper]
    callbacks += monitors.make_callbacks(
        os.path.join(out_dir, "logs"),
        knn_bank=data.knn_bank,
        knn_queries=data.knn_queries,
        knn_every_n_epochs=config["knn_every_n_epochs"],
        knn_k=config["knn_k"],
        view_images=data.view_images,
        augment=data.augment,
        projector_images=data.projector_images,
        projector_labels=data.projector_labels,
        class_names=list(data.source.class_names) or None,
    )
    os.makedirs(os.path.join(out_dir, "checkpoints"), exist_ok=True)
    # The full model after an epoch, or after every `backup_every` steps when epochs are shorter; atomically,
    # and never after a non-finite loss.
    latest = LatestModel(os.path.join(out_dir, "checkpoints", "latest.keras"),
                         save_every_steps=None if steps_per_epoch >= backup_every else backup_every)
    callbacks.append(latest)
    knn = next((c for c in callbacks if isinstance(c, monitors.KNNMonitor)), None)
    random_init_path = os.path.join(out_dir, RANDOM_INIT_FILE)
    if knn is not None and not resumed:
        # Right after the monitor's first evaluation (callbacks run in list order): the random-init
        # figure is measured once, before the first step, and kept for a resumed run to report.
        callbacks.insert(callbacks.index(knn) + 1, keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: _save_random_init(random_init_path, knn.initial_value)))
    if resumed:
        print(f"Resuming from {resumed['path']} at global step {resumed['step']} (epoch {resumed['epoch'] + 1})")
    if config.get("verbose", "auto") == "auto":
        # Keras' display is a bar per epoch, with carriage returns even in a log file. Placed last, so
        # that its lines carry the kNN monitor's values; a line with each one unless that makes > 50.
        every = config["knn_every_n_epochs"] if knn is not None else None
        if every is not None and config["epochs"] > 50 * every:
            every = None
        callbacks.append(RunProgress(every_n_epochs=every))
    return Monitors(callbacks=callbacks, stopper=stopper, knn=knn, random_init_path=random_init_path, backup=backup,
                    latest=latest)


def fit(config, model, data, monitors):
    """The `fit` step: `model.fit` on the endless stream, `steps_per_epoch` at a time; returns the History."""
    verbose = config.get("verbose", "auto")
    return model.fit(
        # Endless (`repeat=True`); each of the data's epochs covers its images once, in its own order.
        data.dataset,
        epochs=config["epochs"],
        steps_per_epoch=config["steps_per_epoch"],
        callbacks=monitors.callbacks,
        verbose=0 if verbose == "auto" else verbose,
        shuffle=False,  # the pipeline shuffles (seeded); Keras would only warn
    )


def finish(config, model, history, data, monitors, out_dir, resumed, started):
    """The `finish` step: model.keras, the export (the run's image size, channels, crop fraction and pixel limit),
    history.json and summary.json; returns the summary.

    Raises:
        NonFiniteLossError: training stopped at a non-finite loss (nothing is saved; the last good backup stays).
    """
    import keras

    from byol_keras.durable import atomic_save_model, atomic_write_json
    from byol_keras.export import export_version

    if monitors.stopper.message is not None:
        raise NonFiniteLossError(f"{monitors.stopper.message} {kept_after_divergence(monitors)}")
    atomic_save_model(model, os.path.join(out_dir, "model.keras"))

    export_dir = None
    if config["export_base_path"] and out_dir == config["run_dir"]:  # the chief exports
        info = export_version(model, config["export_base_path"], config["image_size"],
                              crop_fraction=config["crop_fraction"], max_pixels=config["max_pixels"],
                              channels=config["channels"])
        export_dir = info.get("export_dir")

    knn = monitors.knn
    history_dict = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    random_init = _load_random_init(monitors.random_init_path) if knn is not None else None
    at_resume = knn.initial_value if (knn is not None and resumed) else None
    atomic_write_json(os.path.join(out_dir, "history.json"),
                      {"knn_top1_random_init": random_init, "knn_top1_at_resume": at_resume, **history_dict}, indent=1)
    losses = history_dict.get("loss", [])
    summary = {
        "preset": config["preset"],
        "data": data.source.name,
        "epochs": config["epochs"],
        "steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "resumed_from_step": resumed["step"] if resumed else None,
        "jit_compile": bool(model.jit_compile),
        "loss_first_epoch": losses[0] if losses else None,
        "loss_last_epoch": losses[-1] if losses else None,
        "knn_top1_random_init": random_init,
        "knn_top1_at_resume": at_resume,
        "knn_top1_pretrained": history_dict.get("knn_top1", [None])[-1],
        "knn_top1_raw_pixels": (None if data.knn_bank is None
                                else raw_pixel_knn(data.knn_bank, data.knn_queries, config["knn_k"])),
        "export_dir": export_dir,
        "run_dir": config["run_dir"],
        "seconds": round(time.time() - started, 1),
    }
    atomic_write_json(os.path.join(out_dir, "summary.json"), summary, indent=2)
    return summary


def kept_after_divergence(monitors):
    """What a run stopped at a non-finite loss keeps, named truthfully: the backup (step and path), latest.keras."""
    saved = monitors.backup.last_saved if monitors.backup is not None else None
    kept = [f"the backup of global step {saved[0]} in {saved[1]}" if saved else "no backup (none was written before it)"]
    if monitors.latest is not None and monitors.latest.saved_step is not None:
        kept.append(f"{monitors.latest.path} of global step {monitors.latest.saved_step}")
    resume = (" Running the same command resumes from that backup; --restart with other flags (a lower "
              "--learning-rate) starts over." if saved else "")
    return "Kept: " + " and ".join(kept) + "." + resume


RANDOM_INIT_FILE = "knn_random_init.json"


def _versions():
    """The versions a run used: Python, TensorFlow, Keras, byol_keras."""
    import platform

    import keras
    import tensorflow as tf

    from byol_keras import __version__

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "byol_keras": __version__}
RESULT_RULE = "=" * 88  # above the closing lines
# Above this many bank values (images × pixels) the raw-pixel reference is skipped: it needs a float32 copy.
RAW_PIXEL_KNN_MAX_VALUES = 400_000_000


def _save_random_init(path, value):
    from byol_keras.durable import atomic_write_json

    if value is not None and not os.path.exists(path):
        atomic_write_json(path, {"knn_top1_random_init": value})


def _load_random_init(path):
    """The kNN top-1 of the random-initialised encoder, measured before the first step of the run."""
    try:
        with open(path) as f:
            return json.load(f)["knn_top1_random_init"]
    except (OSError, ValueError, KeyError):
        return None  # a run directory from before this file existed


def raw_pixel_knn(bank, queries, k):
    """kNN top-1 on the (normalised) pixels themselves, the reference a learned representation should beat.

    Args:
        bank: `(images, labels)`, float images `(n, h, w, c)` as the kNN monitor sees them.
        queries: `(images, labels)`, the same form.
        k: int, neighbours (as the monitor).

    Returns:
        float top-1 in [0, 1], or None when the bank is too large to copy (`RAW_PIXEL_KNN_MAX_VALUES`).
    """
    import numpy as np

    from byol_keras.knn import knn_predict

    (bank_x, bank_y), (query_x, query_y) = bank, queries
    if bank_x.size > RAW_PIXEL_KNN_MAX_VALUES:
        return None
    num_classes = int(max(bank_y.max(), query_y.max())) + 1
    predictions = knn_predict(bank_x.reshape(len(bank_x), -1), bank_y, query_x.reshape(len(query_x), -1),
                              num_classes, k=k)
    return float(np.mean(np.asarray(predictions) == query_y))


def short_run_hint(config):
    """A one-line hint when `--epochs` is far below the preset's schedule, or None.

    Paper-scale recipes (LARS at a large learning rate, a slow target) need their whole schedule; a few
    epochs of them can leave the encoder worse than at random initialisation.
    """
    from byol_keras.presets import PRESETS, SHORT_SCHEDULE_PRESETS

    scheduled = PRESETS[config["preset"]]["epochs"]
    if config["epochs"] * 5 > scheduled or config["preset"] not in SHORT_SCHEDULE_PRESETS:
        return None
    short = SHORT_SCHEDULE_PRESETS[config["preset"]]
    return (f"--epochs {config['epochs']} is far below the {scheduled}-epoch schedule of preset "
            f"{config['preset']}; for short runs use --preset {short} ({PRESETS[short]['epochs']} epochs by default)")


class StopRequested(Exception):
    """SIGTERM outside `fit` (as KeyboardInterrupt is SIGINT)."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop_requested(signum, frame):
    raise StopRequested(signum)


def main(argv=None, prog="byol-pretrain"):
    def pretrain(args):
        import logging

        # byol_keras' own choices (strategy, precision, XLA) at INFO; other libraries' loggers only from WARNING
        # (the root's level: TensorFlow's INFO lines, "Sharding callback duration" and the like, stay off).
        logging.basicConfig(format="%(message)s")
        logging.getLogger("byol_keras").setLevel(logging.INFO)
        config = resolve_config(args)
        config["verbose"] = args.verbose
        hint = short_run_hint(config)
        if hint:
            cli.print_warning(hint)
        from byol_keras.fault_tolerance import StoppedBySignal
        # Outside `fit` (loading, building, exporting) a stop loses no training: SIGTERM then ends the command as
        # Ctrl-C does, with one line; inside `fit`, StepBackup takes both signals over and backs up first.
        previous = signal.signal(signal.SIGTERM, _raise_stop_requested)
        try:
            summary = run(config, restart=args.restart)
        except NonFiniteLossError as error:
            print(f"error: {error}", file=sys.stderr)
            return None
        except StoppedBySignal as stop:
            print(f"{stop}; run the same command to resume", file=sys.stderr, flush=True)
            raise SystemExit(stop.exit_code) from None
        except (KeyboardInterrupt, StopRequested) as stop:
            signum = getattr(stop, "signum", signal.SIGINT)
            print(f"stopped by {signal.Signals(signum).name} outside training: every step trained is in the run's "
                  f"backups ({os.path.join(config['run_dir'], BACKUP_DIR)}, if any); run the same command to resume",
                  file=sys.stderr, flush=True)
            raise SystemExit(128 + int(signum)) from None
        finally:
            signal.signal(signal.SIGTERM, previous)
        # Set apart from the progress and the logs above them: these lines are the result.
        print("\n" + RESULT_RULE)
        for line in summary_lines(summary):
            print(line)
        return summary

    return cli.run(pretrain, build_parser(prog), argv)


def summary_lines(summary):
    """The closing lines of a run: steps and time, kNN before and after, the raw-pixel reference, the export."""
    before, after = summary["knn_top1_random_init"], summary["knn_top1_pretrained"]
    line = f"BYOL {summary['preset']}: {summary['steps']} steps in {summary['seconds']:.0f} s"
    if after is not None:
        line += "; kNN top-1 " + ("" if before is None else f"{before:.4f} (random init) -> ") + f"{after:.4f} (pretrained)"
        if summary.get("knn_top1_at_resume") is not None:
            line += f" [{summary['knn_top1_at_resume']:.4f} when resumed at step {summary['resumed_from_step']}]"
    lines = [line]
    raw = summary.get("knn_top1_raw_pixels")
    if raw is not None and after is not None:
        verdict = "above" if after > raw else "not above"
        lines.append(f"kNN top-1 on the raw pixels: {raw:.4f}; the pretrained encoder is {verdict} it "
                     f"({after - raw:+.4f})")
    if summary["export_dir"]:
        lines.append(f"encoder exported to {summary['export_dir']}")
    return lines


def command(prog="byol-pretrain"):
    """The `byol-pretrain` program on `sys.argv`: exit status 0 after a finished run, 1 after a stop at a
    non-finite loss (2 for a bad flag, from argparse), 128 + the signal's number after a stop at SIGTERM or SIGINT.

    After a stop at a signal every file is written and closed when `main` returns (the backup synced, the lock
    released, TensorBoard's writers flushed by `BYOL.fit`); the process then exits without the interpreter's
    teardown of TensorFlow and its input threads, which took about 2 s of a cluster's grace period.
    """
    try:
        return 0 if main(prog=prog) else 1
    except SystemExit as stop:
        if isinstance(stop.code, int) and stop.code > 128:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(stop.code)
        raise
