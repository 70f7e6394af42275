"""The bundled augmentation policies (albumentations pipelines).

Each policy is an ``A.Compose`` stored in ``A.to_dict`` form and the coverage bins it
adds (``targets``). The gap planner (:mod:`vetset.plugins.augment_plan`) picks a policy
for each under-covered cell and feeds it source images from which the pipeline reaches
the cell: :data:`SOURCE_BINS` says which source bins those are (a quarter turn makes a
landscape photo portrait, but leaves a square one square).

=============  ===========================================  ==========================
policy         transforms                                   adds
=============  ===========================================  ==========================
orientation    Transpose + one flip (a quarter turn),        portrait, landscape
               HorizontalFlip, small Affine
square         RandomResizedCrop to a 256 px square          square
colour         ColorJitter / ChannelShuffle, then ToGray     grayscale
clarity        GaussianBlur / MotionBlur / Defocus /         blurry
               Downscale
sharpen        Sharpen / UnsharpMask                         sharp
light          HorizontalFlip, small Affine,                 (class counts only)
               RandomBrightnessContrast
=============  ===========================================  ==========================

Parameter ranges follow albumentations' documented defaults, narrowed where a default
would change another audited property (e.g. ColorJitter's hue before ToGray is harmless,
but a large Affine rotation would blur a small image).
"""

from __future__ import annotations

#: Audited properties and their bins (the audit contract in the brief).
PROPERTY_BINS: dict[str, tuple[str, ...]] = {
    "orientation": ("landscape", "portrait", "square"),
    "colour": ("colour", "grayscale", "bw"),
    "clarity": ("blurry", "normal", "sharp"),
}
#: Per-sample field the audit writes for each property.
PROPERTY_FIELDS: dict[str, str] = {"orientation": "orientation", "colour": "colour_mode", "clarity": "clarity"}

#: (policy, property, target bin) -> source bins from which the policy's pipeline lands in
#: the target bin. Policies and targets not listed here use every bin except the target.
SOURCE_BINS: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("orientation", "orientation", "portrait"): ("landscape",),
    ("orientation", "orientation", "landscape"): ("portrait",),
    ("square", "orientation", "square"): ("landscape", "portrait"),
    ("colour", "colour", "grayscale"): ("colour",),
    ("clarity", "clarity", "blurry"): ("normal", "sharp"),
    ("sharpen", "clarity", "sharp"): ("normal",),
}


def default_source_bins(policy: str, prop: str, target: str) -> tuple[str, ...]:
    """Source bins usable to add ``target`` of ``prop`` with ``policy`` (see :data:`SOURCE_BINS`)."""
    found = SOURCE_BINS.get((policy, prop, target))
    if found is not None:
        return found
    return tuple(b for b in PROPERTY_BINS.get(prop, ()) if b != target)


def bundled_pipelines() -> dict[str, tuple[dict, tuple[tuple[str, str], ...], str]]:
    """``name -> (A.to_dict pipeline, targets, description)`` of the bundled policies."""
    import albumentations as A
    import cv2

    reflect = cv2.BORDER_REFLECT_101
    small_affine = dict(rotate=(-8, 8), scale=(0.95, 1.05), border_mode=reflect)
    specs = {
        "orientation": (
            A.Compose([
                A.Transpose(p=1.0),
                # Transpose then a flip is a quarter turn (clockwise or counter-clockwise)
                A.OneOf([A.HorizontalFlip(p=1.0), A.VerticalFlip(p=1.0)], p=1.0),
                A.HorizontalFlip(p=0.5),
                A.Affine(**small_affine, p=0.3),
            ]),
            (("orientation", "portrait"), ("orientation", "landscape")),
            "a quarter turn (Transpose + flip), mirror, small Affine: swaps landscape and portrait",
        ),
        "square": (
            A.Compose([A.RandomResizedCrop(size=(256, 256), scale=(0.5, 1.0), ratio=(1.0, 1.0), p=1.0)]),
            (("orientation", "square"),),
            "a square crop of 50-100% of the area, resized to 256 x 256",
        ),
        "colour": (
            A.Compose([
                A.OneOf([A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05, p=1.0),
                         A.ChannelShuffle(p=1.0)], p=0.7),
                A.OneOf([A.ToGray(method=m, p=1.0) for m in
                         ("weighted_average", "from_lab", "desaturation", "average")], p=1.0),
            ]),
            (("colour", "grayscale"),),
            "ColorJitter or ChannelShuffle, then ToGray (one of four methods): colour -> grayscale",
        ),
        "clarity": (
            A.Compose([A.OneOf([
                A.GaussianBlur(sigma_limit=(2.0, 4.0), p=1.0),
                A.MotionBlur(blur_limit=(9, 15), p=1.0),
                A.Defocus(radius=(4, 8), alias_blur=(0.1, 0.5), p=1.0),
                # area down, linear up: nearest-neighbour (the default) leaves sharp blocks
                A.Downscale(scale_range=(0.15, 0.3), p=1.0,
                            interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}),
            ], p=1.0)]),
            (("clarity", "blurry"),),
            "GaussianBlur, MotionBlur, Defocus or Downscale: normal/sharp -> blurry",
        ),
        "sharpen": (
            A.Compose([A.OneOf([
                A.Sharpen(alpha=(0.4, 0.7), lightness=(0.9, 1.0), p=1.0),
                A.UnsharpMask(alpha=(0.5, 0.9), p=1.0),
            ], p=1.0)]),
            (("clarity", "sharp"),),
            "Sharpen or UnsharpMask: normal -> sharp",
        ),
        "light": (
            A.Compose([
                A.HorizontalFlip(p=0.5),
                A.Affine(rotate=(-10, 10), scale=(0.9, 1.1), translate_percent=(-0.05, 0.05),
                         border_mode=reflect, p=0.7),
                A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
            ]),
            (),
            "a light general policy (mirror, small Affine, brightness/contrast) that keeps the audited bins",
        ),
    }
    return {name: (A.to_dict(compose), targets, desc) for name, (compose, targets, desc) in specs.items()}


def register_bundled(register) -> None:
    """Register every bundled policy with a ``vetset_register_policies`` ``register`` callable."""
    from vetset.core.registry import Policy

    for name, (pipeline, targets, desc) in bundled_pipelines().items():
        register(Policy(name=name, pipeline=pipeline, targets=targets, description=desc))
