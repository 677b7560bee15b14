"""Time from a stop signal to the exit of `byol-pretrain`, and check what it left: the grace period a cluster gives.

    python -m benchmarks.stop_time                                   # the demo, SIGTERM then SIGINT, 3 rounds each
    python -m benchmarks.stop_time --photos /tmp/photos -- --preset cifar10-resnet18 --image-size 224 --batch-size 32
    TF_ENABLE_ONEDNN_OPTS=0 python -m benchmarks.stop_time           # as on an AVX2-only CPU (oneDNN off)

Each round starts the command (with `--verbose 2`, so that the start of an epoch shows in its output) on a fresh
run folder, waits for `--at-epoch` to begin, sends the signal, and times until the process has exited; then checks
the exit status (128 + signal), the one `stopped by ...` line and the backup it names. Prints one JSON line a round
and a summary line: the seconds from signal to exit (median, max) and the size of the backup written.
Kubernetes gives 30 s by default (`terminationGracePeriodSeconds`), spot VMs about 30 s to 2 minutes.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import report


def one_round(command, out, signum, at_epoch, timeout=900):
    log_path = out + ".log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command + ["--out", out], cwd=report.ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while f"Epoch {at_epoch}/" not in open(log_path).read():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the run ended or stalled before epoch {at_epoch}: {open(log_path).read()[-2000:]}")
            time.sleep(0.02)
        sent = time.monotonic()
        proc.send_signal(signum)
        proc.wait(timeout=timeout)
        seconds = time.monotonic() - sent
    text = open(log_path).read()
    lines = [line for line in text.splitlines() if line.startswith("stopped by")]
    backup = lines[0].split("backup written to ")[1].split(";")[0] if lines and "backup written to" in lines[0] else None
    size = sum(os.path.getsize(os.path.join(backup, f)) for f in os.listdir(backup)) if backup else None
    return {"signal": signal.Signals(signum).name, "seconds_to_exit": round(seconds, 2), "exit_status": proc.returncode,
            "expected_status": 128 + int(signum), "line": lines[0] if len(lines) == 1 else lines,
            "backup_bytes": size}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--at-epoch", type=int, default=3, help="signal once this epoch begins")
    parser.add_argument("--photos", help="a photo folder to pretrain on (benchmarks.photos makes one)")
    parser.add_argument("flags", nargs="*", help="byol-pretrain flags (after --); default: the demo")
    args = parser.parse_args(argv)
    flags = args.flags or ["--preset", "demo"]
    if args.photos:
        flags += ["--data", args.photos]
    command = [sys.executable, "-m", "training.pretrain", *flags, "--export", "none", "--verbose", "2"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="byol-stop-") as tmp:
        for signum in (signal.SIGTERM, signal.SIGINT):
            for i in range(args.rounds):
                row = one_round(command, os.path.join(tmp, f"{signum}-{i}"), signum, args.at_epoch)
                rows.append(row)
                print(json.dumps(row), flush=True)
    times = [row["seconds_to_exit"] for row in rows]
    ok = all(row["exit_status"] == row["expected_status"] and isinstance(row["line"], str) for row in rows)
    print(json.dumps({"figure": "signal to exit", "flags": flags, "all_clean": ok, "median_s": round(statistics.median(times), 2),
                      "max_s": max(times), "backup_mb": round(rows[0]["backup_bytes"] / 1e6, 1),
                      **report.machine()}))


if __name__ == "__main__":
    main()
