"""Step-by-step parity with the peer: the same BYOL network, weights and batches in byol_keras and lightly.

    .venv/bin/python -m benchmarks.peer_parity --peer-python /tmp/peer/bin/python   # the peer's Python (torch, lightly)

`--peer-python` defaults to `$BYOL_PEER_PYTHON`, else `/tmp/peer/bin/python` (the set-up of `../shared/bench/README.md`).

Builds byol_keras' quality-benchmark network at a small size (ResNet-18 of width 4 as lightly's
benchmark backbone: no stem ReLU, PyTorch's padding of strided convolutions; heads 64 → 32), hands
its initial weights and `--steps` batches of random views to lightly's `ResNetGenerator`,
`BYOLProjectionHead` and `BYOLPredictionHead` (`benchmarks/peer_parity_torch.py`, run in the peer's
Python), and trains both: lightly's recipe (SGD 0.12, momentum 0.9, coupled weight decay 5e-4 on every
parameter, loss 0.5·(−cos − cos)) against ours at the equivalent settings (`LARS(trust_coefficient=None)`
at LR 0.12 / 4 and weight decay 4 × 5e-4: our loss, the paper's, has 4× the gradient). The peer moves
its target with our τ schedule (lightly's own `cosine_schedule` divides by K − 1 where the paper divides
by K, and lightly moves the target before a step where we move it after the previous one), so that
only the implementations differ. Prints one JSON line: both losses per step (ours / 4 − 1 is lightly's)
and, per part of the network, ‖their update − our update‖ / ‖our update‖ over all its weights after
the last step (parameters and BatchNorm moving statistics apart).
"""

import argparse
import json
import os
import subprocess
import tempfile

import numpy as np

from benchmarks import report

HERE = os.path.dirname(os.path.abspath(__file__))


def named_weights(model, prefix):
    """`{prefix/layer/weight: array}` for every layer with weights (layer names are unique per model)."""
    out = {}
    for layer in model.layers:
        for weight in layer.weights:
            out[f"{prefix}/{layer.name}/{weight.name}"] = np.asarray(weight)
    return out


def snapshot(model):
    arrays = {}
    for prefix, part in (("encoder", model.encoder), ("projector", model.projector), ("predictor", model.predictor),
                         ("target_encoder", model.target_encoder), ("target_projector", model.target_projector)):
        arrays.update(named_weights(part, prefix))
    return arrays


def run_peer(python, folder, taus):
    result = subprocess.run(
        [python, os.path.join(HERE, "peer_parity_torch.py"), folder, json.dumps(taus)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"error: the peer side failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def update_difference(start, end, other):
    """Per part, parameters and moving statistics apart: ‖other − end‖ / ‖end − start‖ over the part."""
    sums = {}
    for name, value in end.items():
        if name not in other:
            continue  # our Dense bias before a BatchNorm (lightly has none): its gradient is 0
        group = name.split("/")[0] + ("/moving" if "/moving_" in name else "")
        moved = (value - start[name]).ravel()
        diff = (other[name] - value).ravel()
        total = sums.setdefault(group, [0.0, 0.0])
        total[0] += float(diff @ diff)
        total[1] += float(moved @ moved)
    return {group: round((d / m) ** 0.5, 6) if m > 0 else 0.0 for group, (d, m) in sums.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer-python", default=report.PEER_PYTHON,
                        help="the Python of the peer's environment (torch, lightly); default $BYOL_PEER_PYTHON, "
                             "else %(default)s")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--total-steps", type=int, default=10, help="the τ schedule's length K")
    parser.add_argument("--keep", default=None, help="write start.npz and end.npz here (default: a temporary folder)")
    args = parser.parse_args()

    from byol_keras.byol import BYOL  # first: byol_keras turns oneDNN on before TensorFlow starts

    import keras
    from byol_keras.encoders import resnet18
    from byol_keras.optimizers import LARS
    from byol_keras.presets import PYTORCH_DEFAULT_INIT
    from byol_keras.schedules import target_tau

    keras.utils.set_random_seed(0)
    encoder = resnet18(width=4, input_shape=(32, 32, 3), kernel_initializer=PYTORCH_DEFAULT_INIT,
                       stem_relu=False, downsample_padding="symmetric")
    model = BYOL(encoder, projection_dim=32, projection_hidden_dim=64, prediction_hidden_dim=64, base_tau=0.99,
                 total_steps=args.total_steps, head_initializer=PYTORCH_DEFAULT_INIT)
    if not model.built:
        model.build((None, 32, 32, 3))
    model.compile(optimizer=LARS(0.12 / 4, momentum=0.9, weight_decay=4 * 5e-4, trust_coefficient=None,
                                 exclude_from_adaptation=[]))
    views = np.random.default_rng(0).normal(size=(args.steps, 2, args.batch, 32, 32, 3)).astype("float32")

    with tempfile.TemporaryDirectory() as tmp:
        if args.keep:
            tmp = args.keep
        ours_dir, nudged_dir = os.path.join(tmp, "peer"), os.path.join(tmp, "peer-nudged")
        os.makedirs(ours_dir, exist_ok=True)
        os.makedirs(nudged_dir, exist_ok=True)
        start = snapshot(model)
        np.savez(os.path.join(ours_dir, "start.npz"), views=views, **start)
        # The yardstick: the peer against itself on views nudged by one part in a million. Training is
        # chaotic at this scale, so float rounding alone grows from step to step.
        np.savez(os.path.join(nudged_dir, "start.npz"), views=(views * (1 + 1e-6)).astype("float32"), **start)
        ours = [float(model.train_on_batch(v1, v2, return_dict=True)["loss"]) for v1, v2 in views]
        taus = [float(target_tau(k, args.total_steps, model.base_tau)) for k in range(args.steps)]
        peer = [run_peer(args.peer_python, folder, taus) for folder in (ours_dir, nudged_dir)]
        theirs = dict(np.load(os.path.join(ours_dir, "end.npz")))
        nudged = dict(np.load(os.path.join(nudged_dir, "end.npz")))
        end = snapshot(model)
        print(json.dumps({
            "benchmark": "peer_parity",
            "steps": args.steps,
            "batch": args.batch,
            "loss_ours_in_lightly_units": [loss / 4 - 1 for loss in ours],
            "loss_lightly": peer[0]["losses"],
            "weights_compared": sum(name in theirs for name in end),
            "update_difference_relative": update_difference(start, end, theirs),
            "peer_vs_nudged_peer": update_difference(start, nudged, theirs),
        }))

if __name__ == "__main__":
    main()
