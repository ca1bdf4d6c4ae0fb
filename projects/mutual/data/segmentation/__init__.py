"""Segmentation data, offline only: generated shapes, or image+mask sets from a local root.

==========  ==================================================================================
dataset     source
==========  ==================================================================================
shapes      generated (:mod:`.shapes`): ellipses, rectangles, triangles on procedural textures,
            exact masks, 4 classes (background + 3); ``seg.n_train/n_val/n_test``, rendered at
            ``seg.image_size``; fixed by ``data.split_seed``
voc         Pascal VOC 2012 from ``data.path`` (:mod:`.sources`), 21 classes, 255 void
cityscapes  Cityscapes fine annotations from ``data.path``, 19 train ids, the rest void
segfolder   ``<data.path>/images`` + ``<data.path>/masks`` (or ``train/``, ``test/`` of those)
==========  ==================================================================================

:func:`.loader.load_segmentation` builds a run's splits; :mod:`.schema` holds the torch-free
``seg.*`` config section. This package's ``__init__`` stays torch-free (the schema imports it).
"""
SEGMENTATION_DATASETS = ("shapes", "voc", "cityscapes", "segfolder")
