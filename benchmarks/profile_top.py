"""The top costs of a TensorBoard profile, as a table (no TensorBoard needed).

    python -m benchmarks.step --runs 1 --profile runs/profile-step        # writes the profile
    python -m benchmarks.profile_top runs/profile-step --top 15

Reads the `*.xplane.pb` files the TensorFlow profiler wrote under the folder and sums the *self* time
(time not spent in a nested event of the same thread) of every event name over the threads of the host
plane. XLA names every fused kernel apart (`convolution.44`, `transpose_copy_fusion.7`): by default
the numbered suffix is dropped so that kernels of one kind add up (`--no-group` keeps them apart).
`BlockUntilReady` (the host thread waiting for the compiled step, whose kernels run on the other
threads) is reported but left out of the shares, which it would count twice. Prints one JSON line with
the top events, their share of the kernels' self time, and their count.
"""

import argparse
import collections
import glob
import json
import os


def self_times(path):
    """`{event name: [self picoseconds, count]}` over every line of every plane in one xplane file."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.defaultdict(lambda: [0, 0])
    for plane in space.planes:
        names = {key: meta.display_name or meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if "python" in line.name.lower():
                continue  # The Python tracer's line repeats the same time as Python frames.
            events = sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps))
            stack = []  # (end, index into `selfs`)
            selfs = []
            for event in events:
                start, end = event.offset_ps, event.offset_ps + event.duration_ps
                while stack and stack[-1][0] <= start:
                    stack.pop()
                if stack:
                    selfs[stack[-1][1]][1] -= event.duration_ps  # the parent's self time shrinks
                selfs.append([names.get(event.metadata_id, "?"), event.duration_ps])
                stack.append((end, len(selfs) - 1))
            for name, picoseconds in selfs:
                totals[name][0] += max(picoseconds, 0)
                totals[name][1] += 1
    return totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--no-group", dest="group", action="store_false", help="keep XLA's numbered kernels apart")
    args = parser.parse_args(argv)
    files = sorted(glob.glob(os.path.join(args.folder, "**", "*.xplane.pb"), recursive=True))
    if not files:
        raise SystemExit(f"error: no *.xplane.pb under {args.folder!r}")
    totals = self_times(files[-1])
    if args.group:
        grouped = collections.defaultdict(lambda: [0, 0])
        for name, (picoseconds, count) in totals.items():
            stem, _, suffix = name.rpartition(".")
            key = stem if stem and suffix.isdigit() else name
            grouped[key][0] += picoseconds
            grouped[key][1] += count
        totals = grouped
    waiting = totals.pop("BlockUntilReady", [0, 0])[0]
    grand = sum(v[0] for v in totals.values()) or 1
    top = sorted(totals.items(), key=lambda item: -item[1][0])[: args.top]
    print(json.dumps({
        "benchmark": "profile_top_self_time",
        "file": files[-1],
        "total_self_ms": round(grand / 1e9, 1),
        "host_waiting_ms": round(waiting / 1e9, 1),
        "top": [{"event": name, "self_ms": round(ps / 1e9, 1), "share": round(ps / grand, 3), "count": count}
                for name, (ps, count) in top],
    }))


if __name__ == "__main__":
    main()
