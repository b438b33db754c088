"""CIFAR ResNets (He et al. 2016, sec. 4.2) with state-dict keys of akamaster/pytorch_resnet_cifar10.

Option-A shortcuts (strided identity, zero-padded channels; no parameters) as in the pretrained
files, option-B (1x1 conv + BN) as an option (`shortcut="B"`, what the official NeRN teachers use).
`forward(x, return_features=True)` also returns the feature maps that NeRN's feature-map loss reads:
the stem BN output and, per block, BN1 output, BN2 output and the residual sum (all pre-ReLU).
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .symmetry import Group, declare_symmetry, image_input

# Normalisation used to train the akamaster models (ImageNet statistics).
CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)

DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.needs_projection = stride != 1 or in_planes != planes
        self.option = shortcut
        self.pad = planes // 4
        if self.needs_projection and shortcut == "B":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def _shortcut(self, x: Tensor) -> Tensor:
        if not self.needs_projection:
            return x
        if self.option == "A":
            return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return self.shortcut(x)

    def forward(self, x: Tensor, feats: list[Tensor] | None = None) -> Tensor:
        h1 = self.bn1(self.conv1(x))
        h2 = self.bn2(self.conv2(F.relu(h1)))
        s = h2 + self._shortcut(x)
        if feats is not None:
            feats.extend((h1, h2, s))
        return F.relu(s)


class ResNetCifar(nn.Module):
    def __init__(self, depth: int = 20, num_classes: int = 10, shortcut: str = "A", width: int = 16) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        n = DEPTHS[depth]
        self.depth, self.shortcut_option = depth, shortcut
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        planes, in_planes, stages = width, width, []
        for stage in range(3):
            blocks = []
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
            planes *= 2
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(in_planes, num_classes)
        for m in self.modules():  # akamaster init: kaiming normal for conv and linear
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: Tensor, return_features: bool = False):
        feats: list[Tensor] | None = [] if return_features else None
        h = self.bn1(self.conv1(x))
        if feats is not None:
            feats.append(h)
        h = F.relu(h)
        for stage in (self.layer1, self.layer2, self.layer3):
            for block in stage:
                h = block(h, feats)
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        logits = self.linear(h)
        return (logits, feats) if return_features else logits


def resnet_groups(model: nn.Module, sd: Mapping[str, Tensor]) -> dict[str, tuple[Group, ...]]:
    """Option B: each stage's residual stream is one group (shortcut convs map stream to stream).
    Option A: the zero-padded strided shortcut ties stream channels across stages in a way that is
    not a plain permutation group, so streams are kept fixed (a valid, smaller symmetry group);
    the channels inside each block (conv1 out = bn1 = conv2 in) are permutable either way."""
    option_b = getattr(model, "shortcut_option", "A") == "B"

    def stream(stage: int) -> Group:
        return f"stream{stage}" if option_b else None

    out: dict[str, tuple[Group, ...]] = {"conv1.weight": (stream(1), None, None, None)}
    for key in ("weight", "bias", "running_mean", "running_var"):
        out[f"bn1.{key}"] = (stream(1),)
    for stage in (1, 2, 3):
        blocks = getattr(model, f"layer{stage}")
        for i in range(len(blocks)):
            b = f"layer{stage}.{i}"
            g_in = stream(stage - 1 if (i == 0 and stage > 1) else stage)
            mid = f"{b}.mid"
            out[f"{b}.conv1.weight"] = (mid, g_in, None, None)
            out[f"{b}.conv2.weight"] = (stream(stage), mid, None, None)
            for key in ("weight", "bias", "running_mean", "running_var"):
                out[f"{b}.bn1.{key}"] = (mid,)
                out[f"{b}.bn2.{key}"] = (stream(stage),)
                out[f"{b}.shortcut.1.{key}"] = (stream(stage),)
            out[f"{b}.shortcut.0.weight"] = (stream(stage), g_in, None, None)
    out["linear.weight"] = (None, stream(3))
    out["linear.bias"] = (None,)
    return out


@declare_symmetry(resnet_groups, image_input(3, 32))
def resnet_cifar(depth: int = 20, num_classes: int = 10, shortcut: str = "A", width: int = 16) -> ResNetCifar:
    return ResNetCifar(depth=depth, num_classes=num_classes, shortcut=shortcut, width=width)


def normalize_cifar(x: Tensor) -> Tensor:
    """uint8/float images in [0,1] (N,3,H,W) -> normalised as in akamaster training."""
    mean = torch.tensor(CIFAR_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
