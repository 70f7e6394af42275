"""vetset's own albumentations transform, registered through ``vetset_register_transforms``.

:class:`AtWorkingSize` runs its child transforms on a copy of the image resized so that
its longer side is ``size`` pixels, then resizes the result back. Blur parameters of
albumentations (``GaussianBlur.sigma_limit``, ``MotionBlur.blur_limit``, ``Defocus.radius``)
are in pixels, so the same pipeline barely touches a 2,592 px photo and wipes out a
32 px one; inside ``AtWorkingSize`` they are in pixels of the working copy, i.e. a fixed
share of the image, which is what the audit's clarity check measures (variance of the
Laplacian at a fixed longer side, :mod:`vetset.plugins.audit.checks.coverage`). For blur, working
at a lower resolution loses nothing the blur would have kept.

It is image-only (masks, boxes and keypoints are not resized) and serializes with
``A.to_dict`` as ``{"__class_fullname__": "vetset.plugins.augment.transforms.AtWorkingSize",
"size": 256, "p": 1.0, "transforms": [...]}``.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2


class AtWorkingSize(A.BaseCompose):
    """Apply ``transforms`` at a working size (longer side ``size`` px), then restore the size.

    Args:
        transforms: albumentations transforms applied in order (like ``A.Sequential``).
        size: longer side of the working copy, in pixels (area interpolation down,
            bilinear up; the result goes back to the input size the same way).
        p: probability of applying the block.
    """

    def __init__(self, transforms: Any, size: int = 256, p: float = 1.0):
        super().__init__(transforms=transforms, p=p)
        if int(size) < 8:
            raise ValueError(f"size must be at least 8 pixels, got {size}")
        self.size = int(size)

    @staticmethod
    def _resize(image: Any, width: int, height: int) -> Any:
        h, w = image.shape[:2]
        interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LINEAR
        out = cv2.resize(image, (width, height), interpolation=interp)
        return out[..., None] if image.ndim == 3 and out.ndim == 2 else out

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        if not (self.replay_mode or force_apply or self.py_random.random() < self.p):
            return data
        image = data["image"]
        h, w = image.shape[:2]
        scale = self.size / max(h, w)
        work_w, work_h = max(1, round(w * scale)), max(1, round(h * scale))
        if (work_w, work_h) != (w, h):
            data["image"] = self._resize(image, work_w, work_h)
        if "applied_transforms" in data:  # Compose(save_applied_params=True) records it
            data["applied_transforms"].append((type(self).__name__, {"size": self.size, "working_shape": [work_h, work_w]}))
        for t in self.transforms:
            data = t(**data)
            self._track_transform_params(t, data)
        out = data["image"]
        if out.shape[:2] != (h, w):
            data["image"] = self._resize(out, w, h)
        return data

    def to_dict_private(self) -> dict[str, Any]:
        out = super().to_dict_private()
        out["size"] = self.size
        return out


#: Transforms this module registers: serialized name -> class.
TRANSFORMS = {AtWorkingSize.get_class_fullname(): AtWorkingSize}
