"""The quality benchmark's budget run by the peer, lightly (PyTorch): kNN top-1 after every epoch.

    /tmp/peer/bin/python benchmarks/peer_quality.py   # ~40 min here; prints one JSON line per epoch
    /tmp/peer/bin/python benchmarks/peer_quality.py --epochs 100 --checkpoint runs/peer-e100.pt

With `--checkpoint`, the model, optimiser, scheduler, RNG states, step and curve are written there
(atomically: a temporary file, then a rename) after every epoch, and a run started with the same
path continues from the last finished epoch, so a long run can be killed and resumed. The resumed run
is the same recipe but not bit-identical to an unbroken one (the data loader's worker processes draw
new seeds).

Runs with the peer's Python (set up as in `../shared/bench/README.md`), not ours: it imports torch,
torchvision and lightly only. Same budget and evaluation as `benchmarks/quality.py`: the first 1,000
training images of each class (sorted file names, as `byol_keras.data` picks them), lightly's
`ResNetGenerator("resnet-18", width=0.25)` (CIFAR stem, 16 channels in the first stage, 128-d
features), paper heads (4096 → 256), lightly's `BYOLTransform` at 32 px without blur, batch 256,
10 epochs, and lightly's CIFAR-10 benchmark recipe: SGD 0.06 × 256 / 128 = 0.12, momentum 0.9, weight
decay 5e-4 on every parameter, cosine annealing stepped per epoch, τ from 0.99 to 1 on a cosine of the
step, loss 0.5·(−cos(p₁, z₂) − cos(p₂, z₁)). kNN: k = 200, cosine, exp(sim / 0.1) votes, the 10,000
training images as the bank (no augmentation, ImageNet normalisation) and the 10,000 test images as
queries; the random-initialised backbone first.
"""

import argparse
import copy
import json
import os
import time

import numpy as np
import torch
import torchvision.transforms as T
from lightly.loss import NegativeCosineSimilarity
from lightly.models import ResNetGenerator
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from lightly.utils.scheduler import cosine_schedule
from PIL import Image

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "cifar10")
IMAGENET_NORMALIZE = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def load_folder(root, limit_per_class=None):
    """PIL images and labels: class sub-folders in sorted order, sorted file names, the first `limit`."""
    classes = sorted(d for d in os.listdir(root) if not d.startswith("."))
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(root, name)) if not f.startswith("."))
        for filename in files[:limit_per_class]:
            with Image.open(os.path.join(root, name, filename)) as image:
                images.append(image.convert("RGB"))
            labels.append(label)
    return images, np.array(labels)


class Views(torch.utils.data.Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.transform(self.images[index])


class BYOL(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        resnet = ResNetGenerator("resnet-18", width=width)
        self.backbone = torch.nn.Sequential(*list(resnet.children())[:-1], torch.nn.AdaptiveAvgPool2d(1))
        dim = int(512 * width)
        self.projection_head = BYOLProjectionHead(dim, 4096, 256)
        self.prediction_head = BYOLPredictionHead(256, 4096, 256)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x):
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

    def forward_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()


@torch.no_grad()
def embed(backbone, images, batch_size=512):
    backbone.eval()
    to_tensor = T.Compose([T.ToTensor(), T.Normalize(**IMAGENET_NORMALIZE)])
    features = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([to_tensor(image) for image in images[start:start + batch_size]])
        features.append(torch.nn.functional.normalize(backbone(batch).flatten(start_dim=1), dim=1))
    backbone.train()
    return torch.cat(features)


def knn_top1(bank, bank_labels, queries, query_labels, k=200, temperature=0.1, num_classes=10):
    bank_labels = torch.as_tensor(bank_labels)
    correct = 0
    for start in range(0, len(queries), 1000):
        sim = queries[start:start + 1000] @ bank.T
        top_sim, top_index = sim.topk(k, dim=1)
        votes = torch.zeros(len(top_sim), num_classes)
        votes.scatter_add_(1, bank_labels[top_index], (top_sim / temperature).exp())
        correct += (votes.argmax(1).numpy() == query_labels[start:start + 1000]).sum()
    return correct / len(queries)


def save_state(path, state):
    """torch.save to `path` atomically: a reader never sees half a file, a kill leaves the last one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--checkpoint", default=None,
                        help="file to save the state to after every epoch and to resume from if it exists")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.data, "train")):
        raise SystemExit(f"error: no CIFAR-10 image folder at {args.data!r} (expected train/ and test/)")
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)

    train_images, train_labels = load_folder(os.path.join(args.data, "train"), 1000)
    test_images, test_labels = load_folder(os.path.join(args.data, "test"))
    transform = BYOLTransform(
        view_1_transform=BYOLView1Transform(input_size=32, gaussian_blur=0.0),
        view_2_transform=BYOLView2Transform(input_size=32, gaussian_blur=0.0),
    )
    loader = torch.utils.data.DataLoader(
        Views(train_images, transform), batch_size=256, shuffle=True, drop_last=True,
        num_workers=args.workers, persistent_workers=args.workers > 0,
    )
    model = BYOL(width=0.25)
    criterion = NegativeCosineSimilarity()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06 * 256 / 128, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs)

    def evaluate():
        return float(knn_top1(embed(model.backbone, train_images), train_labels,
                              embed(model.backbone, test_images), test_labels))

    max_steps, step, first_epoch, elapsed = args.epochs * len(loader), 0, 0, 0.0
    if args.checkpoint and os.path.exists(args.checkpoint):
        state = torch.load(args.checkpoint, weights_only=False)
        if state["epochs"] != args.epochs or state["seed"] != args.seed:
            raise SystemExit(f"error: {args.checkpoint!r} is a run of {state['epochs']} epochs with seed "
                             f"{state['seed']}, not --epochs {args.epochs} --seed {args.seed}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        step, first_epoch, elapsed, curve = state["step"], state["epoch"], state["seconds"], state["curve"]
        print(json.dumps({"resumed_at_epoch": first_epoch, "step": step}), flush=True)
    start = time.time() - elapsed
    if first_epoch == 0:
        curve = [evaluate()]
        print(json.dumps({"epoch": 0, "knn_top1": curve[0]}), flush=True)
    for epoch in range(first_epoch, args.epochs):
        losses = []
        for view0, view1 in loader:
            momentum = cosine_schedule(step, max_steps, 0.99, 1.0)
            update_momentum(model.backbone, model.backbone_momentum, m=momentum)
            update_momentum(model.projection_head, model.projection_head_momentum, m=momentum)
            p0, z0 = model(view0), model.forward_momentum(view0)
            p1, z1 = model(view1), model.forward_momentum(view1)
            loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        scheduler.step()
        curve.append(evaluate())
        if args.checkpoint:
            save_state(args.checkpoint, {
                "epochs": args.epochs, "seed": args.seed, "epoch": epoch + 1, "step": step, "curve": curve,
                "seconds": time.time() - start, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                "numpy_rng": np.random.get_state()})
        print(json.dumps({"epoch": epoch + 1, "loss": float(np.mean(losses)), "knn_top1": curve[-1],
                          "seconds": round(time.time() - start, 1)}), flush=True)
    print(json.dumps({"benchmark": "peer_quality_cifar10_knn", "peer": "lightly", "seed": args.seed,
                      "knn_top1_random_init": curve[0], "knn_top1_pretrained": curve[-1], "curve": curve,
                      "seconds": round(time.time() - start, 1),
                      "versions": {"torch": torch.__version__, "lightly": __import__("lightly").__version__}}))


if __name__ == "__main__":
    main()
