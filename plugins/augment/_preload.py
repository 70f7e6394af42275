"""Forkserver preload of the augmentation writer: albumentations without torch.

Importing this module runs :func:`vetset.plugins.augment.pipeline.import_albumentations`,
so the forkserver that starts the writer's worker processes holds albumentations (and
OpenCV, NumPy) but not torch, which albumentations would otherwise import for its optional
``ToTensorV2`` (``benchmarks/augment_throughput.py`` prints both import times).
"""

from vetset.plugins.augment.pipeline import import_albumentations

albumentations = import_albumentations()
