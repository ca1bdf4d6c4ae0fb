"""An FCN-16s-style network (Long et al., 2015) on a compact strided encoder, and torchvision's
LR-ASPP MobileNetV3 built without weights. No decoder with full-resolution skips: the
structural opposite of the U-Net."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from projects.mutual.models.segmentation.unet import pad_to_multiple


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FCN(nn.Module):
    """``depth`` stride-2 stages (channels ``width * 2^stage``), a 3x3 context conv with
    dilation 2 on the last; class scores from the last two stages are fused (FCN-16s) and
    upsampled bilinearly to the input size."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, depth: int = 3, dropout: float = 0.0):
        super().__init__()
        if depth < 2:
            raise ValueError(f"fcn needs depth >= 2 (two stages to fuse), got {depth}")
        chans = [width * 2 ** i for i in range(depth)]
        self.depth = depth
        self.stages = nn.ModuleList([_stage(in_channels, chans[0])] +
                                    [_stage(chans[i], chans[i + 1]) for i in range(depth - 1)])
        self.context = nn.Sequential(nn.Conv2d(chans[-1], chans[-1], 3, padding=2, dilation=2, bias=False),
                                     nn.BatchNorm2d(chans[-1]), nn.ReLU(inplace=True),
                                     nn.Dropout2d(dropout) if dropout > 0 else nn.Identity())
        self.score = nn.Conv2d(chans[-1], num_classes, 1)
        self.score_skip = nn.Conv2d(chans[-2], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, 2 ** self.depth)
        size = x.shape[-2:]
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        coarse = self.score(self.context(feats[-1]))
        skip = self.score_skip(feats[-2])
        fused = skip + F.interpolate(coarse, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return F.interpolate(fused, size=size, mode="bilinear", align_corners=False)[..., :h, :w]


class LRASPP(nn.Module):
    """torchvision's ``lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)``,
    returning the ``out`` logits tensor (one tensor in, one out: the method layer's contract)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large

        if in_channels != 3:
            raise ValueError(f"lraspp takes RGB images (3 channels), got {in_channels}")
        self.net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]
