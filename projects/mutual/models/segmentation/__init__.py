"""Segmentation models: map (N, C, H, W) images to (N, classes, H, W) logits at any H, W.

Built by :func:`projects.mutual.models.build_segmenter`. Two architectures of different
inductive bias, so the pair is heterogeneous: a U-Net (full-resolution skip connections: sharp
boundaries) and an FCN (a strided encoder scored at 1/2^depth and 1/2^(depth-1) resolution,
upsampled bilinearly: coarse, context-heavy maps). ``lraspp`` wraps torchvision's
LR-ASPP MobileNetV3-Large with ``weights=None, weights_backbone=None`` (nothing is downloaded).
"""
