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
    summary.json     kNN top-1 before and after, losses, wall time, the training files skipped
and the encoder is exported for TF Serving to `--export` (default `saved_models/<preset>/<version>`).

SIGTERM or SIGINT stops a run after the step in flight, with a backup of it (exit status 143 / 130). `--restart`
starts a run folder over, discarding what it holds. Running the command again on a run folder with a backup resumes
the run, with the configuration of its config.json: a resume may change --epochs (to extend the run), --knn-every, --verbose, --backup-every,
--export, --strategy and --data-dir; every other flag must give the run's own value, or the command stops
with an error naming the flag, the run's value and the one given (docs/design.md, "Resuming a run").
"""

import argparse
import os
import signal
import sys

from byol_keras import cli
from byol_keras.experiment import BACKUP_DIR, NonFiniteLossError, run
from byol_keras.presets import OPTIMIZERS



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
        from byol_keras.encoders import with_width

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


RESULT_RULE = "=" * 88  # above the closing lines


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
    at_scan, when_read = summary.get("files_skipped_at_scan"), summary.get("files_skipped_when_read")
    if at_scan or when_read:
        named = ", ".join(summary["skipped_files"][:3]) + (", ..." if len(summary["skipped_files"]) > 3 else "")
        lines.append(f"skipped {at_scan + when_read} training files that are not decodable images: {at_scan} at the "
                     f"folder's scan, {when_read} when read ({named}; all in summary.json)")
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
