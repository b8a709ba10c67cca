"""The encoder: a small CIFAR-style ResNet in plain torch, followed by a projection head."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.train.config import BackboneName

# ------------------------------------------------------------------------------------------------
# 4. Networks: a small ResNet in plain torch (the heads come from sslosses.heads)
# ------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with BatchNorm and a residual connection."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet (3x3 stem, no max-pool): stages of basic blocks, widths doubling,
    global average pooling. ``out_dim`` is the feature size the kNN probe sees. A
    ``stem_stride`` of 2 halves the resolution of every stage (a quarter of the cost)."""

    def __init__(
        self, in_channels: int, width: int, blocks: Sequence[int], *, stem_stride: int = 1
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        c_in = width
        for stage, n_blocks in enumerate(blocks):
            c_out = width * 2**stage
            for i in range(n_blocks):
                layers.append(BasicBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.out_dim = c_in

    def forward(self, x: Tensor) -> Tensor:
        features: Tensor = self.stages(self.stem(x)).mean(dim=(2, 3))  # (N, F)
        return features


BLOCKS: dict[BackboneName, tuple[int, ...]] = {
    "resnet-tiny": (1, 1, 1),
    "resnet10": (1, 1, 1, 1),
    "resnet18": (2, 2, 2, 2),
}


class Encoder(nn.Module):
    """Backbone followed by a projection head: ``forward`` returns the projections."""

    def __init__(self, backbone: ResNet, projector: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, x: Tensor) -> Tensor:
        z: Tensor = self.projector(self.backbone(x))  # (N, D)
        return z
