"""How the train step's cost grows with batch size and image size: images/second and peak memory.

    python -m benchmarks.scaling                                   # batch 64/128/256 x size 32/64/96
    python -m benchmarks.scaling --batches 64 128 --sizes 32 --width 32

Runs `step.py` in a fresh subprocess per configuration (so that each peak-memory figure is that
configuration's own) and prints one JSON line per configuration, then a summary line with, for every
configuration, the cost per image relative to the first one: a step whose cost grows linearly in batch
and in pixels has a relative cost per image of 1 along the batch axis and of (size / first size)^2 along
the size axis.
"""

import argparse
import json
import os
import subprocess

from benchmarks import report

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 96])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=1, help="steps per timed run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    python = os.path.join(report.ROOT, ".venv", "bin", "python")
    rows = []
    for size in args.sizes:
        for batch in args.batches:
            command = [python, "-m", "benchmarks.step", "--batch", str(batch), "--size", str(size),
                       "--width", str(args.width), "--hidden", str(args.hidden), "--steps", str(args.steps),
                       "--runs", str(args.runs), "--threads", str(args.threads), "--no-matmul"]
            output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=report.ROOT).stdout
            line = json.loads([l for l in output.splitlines() if l.startswith("{")][-1])
            print(json.dumps(line), flush=True)
            rows.append(line)
    base = rows[0]
    base_cost = 1.0 / base["median"]
    summary = []
    for line in rows:
        batch, size = line["config"]["batch"], line["config"]["size"]
        pixels = (size / base["config"]["size"]) ** 2
        summary.append({
            "batch": batch, "size": size, "images_per_second": line["median"],
            "peak_rss_mb": line["peak_rss_mb"],
            # Seconds per image relative to the first configuration, divided by the pixel ratio:
            # 1.0 means exactly linear in batch and pixels.
            "cost_per_image_per_pixel_vs_first": round((1.0 / line["median"]) / base_cost / pixels, 3),
        })
    print(json.dumps({"benchmark": "scaling_summary", "rows": summary, "machine": report.machine()}), flush=True)


if __name__ == "__main__":
    main()
