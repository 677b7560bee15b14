"""One BYOL pretraining run, step by step: resolve -> data -> model -> monitors -> fit -> finish.

`run(config)` is what `byol-pretrain` does after parsing its flags (`byol_keras.cli.pretrain.resolve_config` gives
`config`: a preset with the flags applied). Each step is a function that reads the frozen configuration:

- `resume_or_start`: a backup in the run folder means a resume, with the run's own config.json (`resume_config`:
  what a resume may change, `RESUME_MAY_CHANGE`, and what it must keep, `RESUME_MUST_KEEP`).
- `resolve`: open the data (`data.run_source`) and derive every value the run decides once (steps, crop fraction,
  oneDNN's state, BatchNorm, versions, the XLA choice); the configuration is frozen from here.
- `make_data`: the views (`data.run_views`) and the kNN monitor's arrays.
- `make_model`: the encoder (`encoders.build_encoder`), BYOL, the optimizer (`optimizers.build_optimizer`).
- `make_monitors`: backups, the non-finite stop, the kNN monitor and TensorBoard, `latest.keras`, the progress bar.
- `fit`, `finish`: training, then `model.keras`, the export and `summary.json`.

Imports of TensorFlow and Keras are made inside the steps, so that the command line answers `--help` without them.
"""

import dataclasses
import json
import os
import sys
import time

from byol_keras.run_folder import CONFIG_FILENAME


def _warn(message):
    print(f"warning: {message}", file=sys.stderr)


class NonFiniteLossError(RuntimeError):
    """Training stopped at a non-finite loss; the last good backup is kept."""


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
    with (run_lock(config["run_dir"], warn=_warn) if is_chief(strategy) else contextlib.nullcontext()):
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
    from byol_keras.encoders import build_encoder
    from byol_keras.layers import sync_batchnorm
    from byol_keras.optimizers import build_optimizer

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


def skipped_files(source):
    """The training files skipped, for the summary: at the folder's scan (no image, empty, cut before its header,
    above the pixel limit) and when the pipeline read them (damaged behind a good header), each counted once, with
    their paths (a resumed run counts what this launch met)."""
    when_read = source.met_failures.files()
    return {"files_skipped_at_scan": len(source.skipped), "files_skipped_when_read": len(when_read),
            "skipped_files": [path for path, _ in source.skipped] + when_read}


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
        **skipped_files(data.source),
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
