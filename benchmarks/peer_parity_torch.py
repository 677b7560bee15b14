"""The peer's half of `peer_parity.py` (run in the peer's Python): lightly's BYOL from our weights.

    /tmp/peer/bin/python benchmarks/peer_parity_torch.py DIR TAUS_JSON

Reads `DIR/start.npz` (our initial weights by `part/layer/weight` and the views), builds lightly's
benchmark network (`ResNetGenerator("resnet-18", width=4/64)` without its classifier, `BYOLProjectionHead`,
`BYOLPredictionHead`), copies the weights in, trains one step per batch with lightly's recipe, moves the
target after step k with τ = TAUS_JSON[k] (`lightly.models.utils.update_momentum`), writes the final
weights in our layout to `DIR/end.npz` and prints the losses as JSON.
"""

import argparse
import copy
import json
import os

import numpy as np
import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models import ResNetGenerator
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum


def backbone_modules(backbone):
    """(our layer name, torch module) for every conv and BatchNorm of lightly's backbone."""
    yield "stem_conv", backbone[0]
    yield "stem_bn", backbone[1]
    for stage in range(4):
        for index, block in enumerate(backbone[2 + stage]):
            name = f"stage{stage + 1}_block{index + 1}"
            yield f"{name}_1_conv", block.conv1
            yield f"{name}_1_bn", block.bn1
            yield f"{name}_2_conv", block.conv2
            yield f"{name}_2_bn", block.bn2
            if len(block.shortcut):
                yield f"{name}_proj_conv", block.shortcut[0]
                yield f"{name}_proj_bn", block.shortcut[1]


def head_modules(head):
    layers = head.layers
    yield "dense_hidden", layers[0]
    yield "bn", layers[1]
    yield "dense_out", layers[3]


def tensors(module):
    """our weight name -> (torch tensor, to-torch layout function, to-ours layout function)."""
    if isinstance(module, torch.nn.Conv2d):
        return {"kernel": (module.weight, lambda a: a.transpose(3, 2, 0, 1), lambda a: a.transpose(2, 3, 1, 0))}
    if isinstance(module, torch.nn.Linear):
        out = {"kernel": (module.weight, lambda a: a.T, lambda a: a.T)}
        if module.bias is not None:
            out["bias"] = (module.bias, lambda a: a, lambda a: a)
        return out
    same = lambda a: a  # noqa: E731
    return {"gamma": (module.weight, same, same), "beta": (module.bias, same, same),
            "moving_mean": (module.running_mean, same, same), "moving_variance": (module.running_var, same, same)}


def parts(model):
    yield "encoder", backbone_modules(model["backbone"])
    yield "projector", head_modules(model["projection_head"])
    yield "predictor", head_modules(model["prediction_head"])
    yield "target_encoder", backbone_modules(model["backbone_momentum"])
    yield "target_projector", head_modules(model["projection_head_momentum"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="holds start.npz (written by peer_parity.py); end.npz is written there")
    parser.add_argument("taus", type=json.loads, help="JSON list: the τ that moves the target after step k")
    args = parser.parse_args(argv)
    folder, taus = args.folder, args.taus
    torch.manual_seed(0)
    start = np.load(os.path.join(folder, "start.npz"))
    resnet = ResNetGenerator("resnet-18", width=4 / 64)
    backbone = torch.nn.Sequential(*list(resnet.children())[:-1], torch.nn.AdaptiveAvgPool2d(1))
    model = torch.nn.ModuleDict({
        "backbone": backbone,
        "projection_head": BYOLProjectionHead(32, 64, 32),
        "prediction_head": BYOLPredictionHead(32, 64, 32),
    })
    model["backbone_momentum"] = copy.deepcopy(model["backbone"])
    model["projection_head_momentum"] = copy.deepcopy(model["projection_head"])
    with torch.no_grad():
        for prefix, modules in parts(model):
            for layer, module in modules:
                for weight, (tensor, to_torch, _) in tensors(module).items():
                    tensor.copy_(torch.from_numpy(np.ascontiguousarray(to_torch(start[f"{prefix}/{layer}/{weight}"]))))
    deactivate_requires_grad(model["backbone_momentum"])
    deactivate_requires_grad(model["projection_head_momentum"])
    model.train()

    def online(x):
        return model["prediction_head"](model["projection_head"](model["backbone"](x).flatten(start_dim=1)))

    def target(x):
        return model["projection_head_momentum"](model["backbone_momentum"](x).flatten(start_dim=1)).detach()

    criterion = NegativeCosineSimilarity()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.12, momentum=0.9, weight_decay=5e-4)
    losses = []
    for step, (v0, v1) in enumerate(start["views"]):
        x0 = torch.from_numpy(v0).permute(0, 3, 1, 2).contiguous()
        x1 = torch.from_numpy(v1).permute(0, 3, 1, 2).contiguous()
        z0, z1 = target(x0), target(x1)
        p0, p1 = online(x0), online(x1)
        loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        update_momentum(model["backbone"], model["backbone_momentum"], m=taus[step])
        update_momentum(model["projection_head"], model["projection_head_momentum"], m=taus[step])
        losses.append(float(loss))
    end = {}
    for prefix, modules in parts(model):
        for layer, module in modules:
            for weight, (tensor, _, to_ours) in tensors(module).items():
                end[f"{prefix}/{layer}/{weight}"] = to_ours(tensor.detach().numpy())
    np.savez(os.path.join(folder, "end.npz"), **end)
    print(json.dumps({"losses": losses}))


if __name__ == "__main__":
    main()
