"""The segmentation keys of the mutual config (``seg.*``): torch-free, read only by
``problem=segmentation`` (inert in the other problems' runs, like ``pde.*``)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from tracking import Section

SHAPE_CLASSES = ("background", "ellipse", "rectangle", "triangle")
"""Class index -> name of the generated ``shapes`` set (0 is the background)."""


class SegConfig(Section):
    """Generated shapes (``data.dataset=shapes``) and the image+mask sets read from ``data.path``."""

    n_train: PositiveInt = 1000
    """shapes: generated training scenes (a folder dataset: data.max_train caps it instead)."""
    n_val: PositiveInt = 100
    """shapes: validation scenes (picks the best epoch)."""
    n_test: PositiveInt = 200
    image_size: PositiveInt = 64
    """Side of the square images models train on (shapes are rendered at it, read sets resized to it)."""
    shift_image_size: PositiveInt = 96
    """resolution_shift: side of the test images (test_clean: the same scenes at image_size)."""
    min_shapes: PositiveInt = 1
    """shapes: fewest shapes per scene (uniform between min_shapes and max_shapes; later ones occlude)."""
    max_shapes: PositiveInt = 4
    domain_shift: Literal["both", "texture", "palette"] = "both"
    """domain_shift: what the test scenes change, with the same geometry as test_clean: the
    background texture families, the shape colour palette, or both."""
    granularity: Literal["pixel", "image"] = "pixel"
    """Elements the methods weigh: every pixel (the SSMO mask per pixel), or one per image (the
    mean over its valid pixels)."""
    num_classes: PositiveInt | None = None
    """segfolder: number of classes (None: the largest label in the masks + 1); fixed for
    shapes (4), voc (21), cityscapes (19)."""
    ignore_index: int = Field(255, ge=0, le=255)
    """Mask value of void pixels (VOC's object borders, Cityscapes' unlabelled classes): no loss,
    no imitation, not counted in any metric."""

    @model_validator(mode="after")
    def _shape_range(self) -> "SegConfig":
        if self.min_shapes > self.max_shapes:
            raise ValueError(f"seg.min_shapes={self.min_shapes} > seg.max_shapes={self.max_shapes}; "
                             f"need min_shapes <= max_shapes")
        return self
