"""Example heat maps: what a person looks at first to judge an anomaly detector.

Rows are test images (anomalous ones first, then a normal one), columns the image, its true
mask and the model's anomaly map, with the image score in the title.
"""
from __future__ import annotations

from typing import Any


def example_items(dataset: Any, n: int) -> list[Any]:
    """Up to ``n`` test items: one per defect folder in turn, and one normal image last."""
    labels = [int(dataset[i].gt_label) for i in range(len(dataset))]
    bad = [i for i, lab in enumerate(labels) if lab == 1]
    good = [i for i, lab in enumerate(labels) if lab == 0]
    step = max(1, len(bad) // max(1, n - 1))
    chosen = bad[::step][: max(0, n - 1)] + good[:1]
    return [dataset[i] for i in chosen]


def heatmap_figure(model: Any, dataset: Any, n: int, title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    items = example_items(dataset, n)
    model.eval()
    with torch.no_grad():
        out = model(torch.stack([it.image for it in items]))
    maps = out.anomaly_map.detach().cpu()
    scores = out.pred_score.detach().cpu().flatten()
    fig, axes = plt.subplots(len(items), 3, figsize=(6.3, 2.1 * len(items)), squeeze=False)
    for row, (item, amap, score) in enumerate(zip(items, maps, scores)):
        img = item.image.permute(1, 2, 0).clamp(0, 1).numpy()
        mask = item.gt_mask.squeeze().numpy() if item.gt_mask is not None else img[..., 0] * 0
        axes[row, 0].imshow(img)
        axes[row, 0].set_title(f"{'defect' if int(item.gt_label) else 'normal'} (score {float(score):.2f})",
                               fontsize=8)
        axes[row, 1].imshow(mask, cmap="gray", vmin=0, vmax=1)
        axes[row, 1].set_title("true mask", fontsize=8)
        axes[row, 2].imshow(amap.squeeze().numpy(), cmap="jet", vmin=0, vmax=1)
        axes[row, 2].set_title("anomaly map", fontsize=8)
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
