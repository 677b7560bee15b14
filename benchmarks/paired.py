"""Paired comparison with the peer (lightly on PyTorch): run peer and ours alternately, report ratios.

    python -m benchmarks.paired step --rounds 5                  # train step, batch 128, 32 px
    python -m benchmarks.paired step --rounds 5 --jit 0          # the same, our step without XLA (1: with)
    python -m benchmarks.paired pipeline32 --rounds 5            # views at 32 px from CIFAR-10's folder, no blur
    python -m benchmarks.paired pipeline96 --rounds 5            # views at 96 px from CIFAR-10's folder, the blur
    python -m benchmarks.paired pipeline224 --rounds 3           # 400x300 JPEG photos, 224-px views, the paper's blur
    python -m benchmarks.paired pipeline224-mixed --rounds 3     # JPEG photos of 300-640 px a side, any aspect
    python -m benchmarks.paired step-demo --rounds 5             # the demo-sized step (width 8, heads 256 -> 64)
    python -m benchmarks.paired step --isa AVX2                  # both sides restricted to AVX2 (an AMD Zen CPU),
                                                                 # ours with oneDNN off, then on
    python -m benchmarks.paired all --rounds 5

Our side of every pipeline figure is `benchmarks.pipeline` with no option that leaves the user's path: the
data `byol-pretrain --preset P --data FOLDER --image-size SIZE --batch-size 256` builds (its configuration and
its two calls, `byol_keras.data.run_source` and `run_views`), whatever path and cache those choose; the first
epoch is not timed on either side (the peer's first batch only). `pipeline96-cached` is `pipeline96`'s name in
older notes.

Each round starts the peer's script (from `--peer-dir`, run with `--peer-python`; defaults: `$BYOL_PEER_DIR`
and `$BYOL_PEER_PYTHON`, else `../shared/bench` beside the clone and `/tmp/peer/bin/python`, the set-up of
`../shared/bench/README.md`) and then ours as subprocesses, one after the other, so that both see the same
machine load in turn. Every subprocess prints one JSON line; its peak resident memory comes from
`os.wait4` (the child's own `ru_maxrss`), measured the same way for both. Prints one JSON line per
figure: the peer's and our per-run figures, their medians, min and max, the ratio of the medians, and
the peak memory of each.

`--isa AVX2` runs both sides as on a CPU without AVX-512: `ONEDNN_MAX_CPU_ISA=AVX2` (TensorFlow's and
PyTorch's oneDNN kernels), `XLA_FLAGS=--xla_cpu_max_isa=AVX2` (XLA's CPU code generation) and
`MKL_ENABLE_INSTRUCTIONS=AVX2` (PyTorch's MKL). A real AVX2 CPU also differs in what TensorFlow does by
default: it leaves its oneDNN kernels off there (byol_keras turns them on when imported first, a script
that imported TensorFlow first keeps them off), so with `--isa AVX2` each figure is measured twice, ours
with `TF_ENABLE_ONEDNN_OPTS=0` (Eigen kernels) and with `=1`, each against the same peer command; every
line carries `onednn`, TensorFlow's own record of the state. With `--jit auto` XLA follows that state
(on with oneDNN off, off with it on; `ours_config.jit_compile` says which).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import report

HERE = os.path.dirname(os.path.abspath(__file__))
OURS_PYTHON = os.path.join(report.ROOT, ".venv", "bin", "python")


def photo_folders(args, names):
    """The JPEG folders both sides read for `pipeline224` (400x300) and `pipeline224-mixed` (made once each)."""
    from benchmarks.photos import make_mixed_photos, make_photos

    if "pipeline224" in names:
        make_photos(args.photos_dir, per_class=args.photos_per_class)
    if "pipeline224-mixed" in names:
        make_mixed_photos(args.mixed_dir, per_class=args.photos_per_class)


def figures(args):
    """name -> (peer command, our command, how to read images/s from each JSON line)."""
    cifar_train = os.path.join(args.data, "train")
    steps = str(args.steps)
    return {
        "step": (
            [args.peer_python, os.path.join(args.peer_dir, "peer_step.py"), "--batch", "128", "--size", "32",
             "--threads", "2", "--steps", steps, "--warmup", "1"],
            [OURS_PYTHON, "-m", "benchmarks.step", "--batch", "128", "--size", "32", "--threads", "2",
             "--steps", "1", "--runs", str(args.our_runs), "--warmup", "1", "--jit", str(args.jit)],
        ),
        "step-demo": (
            [args.peer_python, os.path.join(HERE, "peer_step_small.py"), "--batch", "128", "--size", "32",
             "--threads", "2", "--steps", str(max(int(steps), 10)), "--warmup", "3"],
            [OURS_PYTHON, "-m", "benchmarks.step", "--batch", "128", "--size", "32", "--threads", "2",
             "--width", "8", "--hidden", "256", "--projection-dim", "64", "--steps", "10",
             "--runs", str(args.our_runs), "--warmup", "1", "--jit", str(args.jit)],
        ),
        "pipeline32": (
            [args.peer_python, os.path.join(args.peer_dir, "peer_augment.py"), cifar_train, "--size", "32",
             "--workers", "2", "--blur", "0"],
            [OURS_PYTHON, "-m", "benchmarks.pipeline", "--data", args.data, "--size", "32",
             "--runs", str(args.our_runs)],
        ),
        "pipeline96": (
            [args.peer_python, os.path.join(args.peer_dir, "peer_augment.py"), cifar_train, "--size", "96",
             "--workers", "2"],
            [OURS_PYTHON, "-m", "benchmarks.pipeline", "--data", args.data, "--size", "96",
             "--runs", str(args.our_runs), "--batches", "5"],
        ),
        "pipeline224": photo_commands(args, "--photos", args.photos_dir),
        "pipeline224-mixed": photo_commands(args, "--mixed", args.mixed_dir),
    }



def photo_commands(args, kind, folder):
    """The peer's and our commands for a 224-px figure on a folder of photos (`kind`: `--photos` or `--mixed`)."""
    return (
        [args.peer_python, os.path.join(args.peer_dir, "peer_augment.py"), folder, "--size", "224",
         "--workers", "2", "--batches", "10"],
        [OURS_PYTHON, "-m", "benchmarks.pipeline", kind, "--photos-dir", folder, "--size", "224",
         "--photos-per-class", str(args.photos_per_class), "--runs", str(args.our_runs), "--batches", "4"],
    )


def isa_environment(isa):
    """Environment variables that restrict both frameworks' kernels to `isa` ("AVX2"), or none."""
    if not isa:
        return {}
    return {"ONEDNN_MAX_CPU_ISA": isa, "XLA_FLAGS": f"--xla_cpu_max_isa={isa}", "MKL_ENABLE_INSTRUCTIONS": isa}


def run_child(command, extra_env=None):
    """Run `command`; return (its last JSON line as a dict, its peak RSS in MiB, wall seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=report.ROOT,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(extra_env or {})})
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(command)} failed (exit {process.returncode}):\n{output[-2000:]}")
    return json.loads(lines[-1]), usage.ru_maxrss / 1024.0, time.perf_counter() - start


def compare(name, peer_command, our_command, rounds, isa=None, our_env=None):
    peer_runs, our_runs, peer_rss, our_rss, our_lines = [], [], [], [], []
    for round_index in range(rounds):
        line, rss, seconds = run_child(peer_command, isa_environment(isa))
        peer_runs.append(line["images_per_second"])
        peer_rss.append(rss)
        print(f"# {name} round {round_index + 1}: peer {line['images_per_second']} images/s "
              f"({rss:.0f} MiB, {seconds:.0f} s)", file=sys.stderr, flush=True)
        line, rss, seconds = run_child(our_command, {**isa_environment(isa), **(our_env or {})})
        our_runs.extend(line["runs"])
        our_rss.append(rss)
        our_lines.append(line)
        print(f"# {name} round {round_index + 1}: ours {line['median']} images/s "
              f"({rss:.0f} MiB, {seconds:.0f} s)", file=sys.stderr, flush=True)
    ours, peer = report.summary(our_runs), report.summary(peer_runs)
    result = {
        "benchmark": f"paired_{name}",
        "unit": "images/s",
        "ratio_of_medians": round(ours["median"] / peer["median"], 3),
        "ours": ours,
        "peer": peer,
        "ours_peak_rss_mb": round(max(our_rss), 1),
        "peer_peak_rss_mb": round(max(peer_rss), 1),
        "ours_config": our_lines[-1]["config"],
        "peer_command": " ".join(os.path.basename(part) if part.startswith("/tmp") else part for part in peer_command),
        "rounds": rounds,
        "isa": isa or "native",
        "onednn": our_lines[-1].get("onednn"),
        "machine": report.machine(),
    }
    for key in ("fraction_of_matmul", "achieved_gflops", "matmul_gflops"):
        if key in our_lines[-1]:
            result[f"ours_{key}"] = report.summary([line[key] for line in our_lines])
    print(json.dumps(result), flush=True)
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("figure", choices=("step", "step-demo", "pipeline32", "pipeline96", "pipeline96-cached",
                                           "pipeline224", "pipeline224-mixed", "all"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--our-runs", dest="our_runs", type=int, default=5, help="timed runs inside each of our processes")
    parser.add_argument("--steps", type=int, default=2, help="timed steps of each peer train-step process")
    parser.add_argument("--peer-python", dest="peer_python", default=report.PEER_PYTHON,
                        help="the Python of the peer's environment (torch, lightly); default $BYOL_PEER_PYTHON, "
                             "else %(default)s")
    parser.add_argument("--peer-dir", dest="peer_dir", default=report.PEER_DIR,
                        help="the folder of the peer's scripts peer_step.py and peer_augment.py; default "
                             "$BYOL_PEER_DIR, else %(default)s")
    parser.add_argument("--data", default=report.DEFAULT_CIFAR)
    parser.add_argument("--photos-dir", dest="photos_dir",
                        default=os.path.join(tempfile.gettempdir(), "byol_keras_photos_400x300_q90"),
                        help="where pipeline224's photos are made (or reused); nothing is committed")
    parser.add_argument("--mixed-dir", dest="mixed_dir",
                        default=os.path.join(tempfile.gettempdir(), "byol_keras_photos_mixed_q90"),
                        help="where pipeline224-mixed's photos are made (or reused)")
    parser.add_argument("--photos-per-class", dest="photos_per_class", type=int, default=600)
    parser.add_argument("--jit", default="auto", choices=("auto", "0", "1"),
                        help="our train step with XLA (1), without (0), or the library's choice (auto, default)")
    parser.add_argument("--isa", choices=("AVX2",), help="restrict both sides to this instruction set (see above)")
    parser.add_argument("--onednn", choices=("both", "off", "on"), default="both",
                        help="with --isa: ours with oneDNN off, on, or both (default)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    table = figures(args)
    table["pipeline96-cached"] = table["pipeline96"]  # the name of older notes
    names = ("pipeline32", "pipeline96", "pipeline224", "pipeline224-mixed", "step", "step-demo") \
        if args.figure == "all" else (args.figure,)
    photo_folders(args, names)
    # Under --isa AVX2 ours runs as a real AVX2 CPU may have it, oneDNN off (TensorFlow's default there), and on.
    settings = (("-onednn-off", {"TF_ENABLE_ONEDNN_OPTS": "0"}), ("-onednn-on", {"TF_ENABLE_ONEDNN_OPTS": "1"})) \
        if args.isa else (("", None),)
    settings = tuple(s for s in settings if args.onednn == "both" or s[0].endswith(args.onednn))
    for name in names:
        for suffix, our_env in settings:
            compare(name + suffix, *table[name], rounds=args.rounds, isa=args.isa, our_env=our_env)


if __name__ == "__main__":
    main()
