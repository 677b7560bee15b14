"""A command's first contact: how long `--help` takes, and how long the demo takes to print its first line.

    python -m benchmarks.startup                 # --help of the four commands, both entry points; the demo
    python -m benchmarks.startup --runs 5 --no-demo

Each figure is a real process, started as a user starts it: the installed console command (`byol-pretrain`,
beside this Python) and the clone's `python -m training.X`. `--help` is timed from the start of the process to its
exit; the demo (`python -m training.pretrain --preset demo`, into a temporary run folder, no export) from the
start of the process to its first line on the console (stdout and stderr alike), after which it is killed. Prints one JSON line per figure (seconds: median, min, max of `--runs`).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

# The user's own TensorFlow log level, read before `benchmarks.report` sets one for the benchmarks' own
# TensorFlow: the commands timed here run with the console a user gets.
USER_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")

from benchmarks import report  # noqa: E402

COMMANDS = ("pretrain", "linear_eval", "finetune", "export")


def command_env():
    """This environment as the user had it: without the TensorFlow log level `benchmarks.report` set."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if USER_LOG_LEVEL is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = USER_LOG_LEVEL
    return env


def time_help(argv):
    """Seconds from starting `argv + ["--help"]` to its exit (status 0)."""
    start = time.perf_counter()
    subprocess.run(argv + ["--help"], cwd=report.ROOT, env=command_env(), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def time_to_first_line(argv):
    """`(seconds, line)`: from starting `argv` to its first line on stdout or stderr; the process is then stopped."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=report.ROOT, env=command_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        seconds = time.perf_counter() - start
    finally:
        process.kill()  # its run folder is a temporary one: nothing to keep
        process.communicate(timeout=120)
    return seconds, line.rstrip("\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="processes per figure (default 3)")
    parser.add_argument("--no-demo", dest="demo", action="store_false", help="only the --help figures")
    args = parser.parse_args(argv)

    bin_dir = os.path.dirname(sys.executable)
    for command in COMMANDS:
        script = os.path.join(bin_dir, "byol-" + command.replace("_", "-"))
        ways = {f"python -m training.{command} --help": [sys.executable, "-m", f"training.{command}"]}
        if os.path.isfile(script):  # installed (pip install -e .)
            ways[f"byol-{command.replace('_', '-')} --help"] = [script]
        for name, way in ways.items():
            seconds = [time_help(way) for _ in range(args.runs)]
            report.emit("startup", {"command": name}, seconds, "s")
    if args.demo:
        seconds, lines = [], []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as folder:
                value, line = time_to_first_line([sys.executable, "-m", "training.pretrain", "--preset", "demo",
                                                  "--out", os.path.join(folder, "run"), "--export", "none"])
            seconds.append(value)
            lines.append(line)
        report.emit("startup", {"command": "python -m training.pretrain --preset demo (to its first line)"},
                    seconds, "s", first_lines=sorted(set(lines)))


if __name__ == "__main__":
    main()
