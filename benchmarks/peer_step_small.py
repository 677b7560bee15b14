"""The peer's side of the demo-sized train step: lightly (PyTorch), ResNet-18 of width 8, heads 256 → 64.

    /tmp/peer/bin/python benchmarks/peer_step_small.py --batch 128 --size 32 --threads 2

Runs with the peer's Python (`../shared/bench/README.md`), like `../shared/bench/peer_step.py`, whose
step it repeats on the network of `--preset demo`: lightly's `ResNetGenerator("resnet-18", width=0.125)`
(CIFAR stem, 8 channels in the first stage, 64-d features), `BYOLProjectionHead(64, 256, 64)`,
`BYOLPredictionHead(64, 256, 64)`, symmetric negative-cosine loss, SGD with momentum, EMA of the target.
Random inputs. Prints one JSON line with images/second (`batch / step time`).
"""

import argparse
import copy
import json
import time

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models import ResNetGenerator
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--width", type=float, default=0.125, help="lightly's width multiplier (0.125: 8 channels)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--out-dim", dest="out_dim", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    resnet = ResNetGenerator("resnet-18", width=args.width)
    backbone = torch.nn.Sequential(*list(resnet.children())[:-1], torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    features = backbone(torch.zeros(2, 3, args.size, args.size)).shape[1]
    projector = BYOLProjectionHead(features, args.hidden, args.out_dim)
    predictor = BYOLPredictionHead(args.out_dim, args.hidden, args.out_dim)
    target_backbone, target_projector = copy.deepcopy(backbone), copy.deepcopy(projector)
    deactivate_requires_grad(target_backbone)
    deactivate_requires_grad(target_projector)
    params = list(backbone.parameters()) + list(projector.parameters()) + list(predictor.parameters())
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    criterion = NegativeCosineSimilarity()
    x1 = torch.rand(args.batch, 3, args.size, args.size)
    x2 = torch.rand(args.batch, 3, args.size, args.size)

    def step():
        p1 = predictor(projector(backbone(x1)))
        p2 = predictor(projector(backbone(x2)))
        with torch.no_grad():
            z1 = target_projector(target_backbone(x1))
            z2 = target_projector(target_backbone(x2))
        loss = criterion(p1, z2) + criterion(p2, z1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        update_momentum(backbone, target_backbone, 0.99)
        update_momentum(projector, target_projector, 0.99)

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    print(json.dumps({"peer": "lightly", "torch": torch.__version__, "batch": args.batch, "size": args.size,
                      "width": args.width, "features": features, "threads": args.threads,
                      "step_seconds": round(seconds, 4), "images_per_second": round(args.batch / seconds, 2)}))


if __name__ == "__main__":
    main()
