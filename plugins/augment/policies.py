"""The bundled augmentation policies (albumentations pipelines).

Each policy is an ``A.Compose`` stored in ``A.to_dict`` form and the coverage bins it
adds (``targets``). The gap planner (:mod:`vetset.plugins.augment.plan`) picks a policy
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
               Downscale, at a 256 px working size
sharpen        Sharpen (Gaussian kernel), UnsharpMask        sharp
light          HorizontalFlip, small Affine,                 (class counts only)
               RandomBrightnessContrast
=============  ===========================================  ==========================

Blur and sharpen strengths were chosen so that the audit's clarity check (variance of the
Laplacian at 128 px; blurry < 100, sharp > 1000) puts the result in the target bin: on 130
hymenoptera photos every clarity output was blurry (max 89) and 98% of Sharpen outputs
from ``normal`` sources were sharp. Other ranges are albumentations' defaults, narrowed
where a default would move another audited property (a large Affine rotation blurs).
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

    from vetset.plugins.augment.transforms import AtWorkingSize

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
            # blur parameters are in pixels of a 256 px working copy (see AtWorkingSize), so
            # every image ends up blurry at the audit's scale whatever its resolution
            A.Compose([AtWorkingSize([A.OneOf([
                A.GaussianBlur(sigma_limit=(3.0, 6.0), p=1.0),
                # motion blur leaves edges across its direction: a light Gaussian follows
                A.Sequential([A.MotionBlur(blur_limit=(15, 25), p=1.0),
                              A.GaussianBlur(sigma_limit=(2.0, 3.5), p=1.0)], p=1.0),
                A.Defocus(radius=(6, 10), alias_blur=(0.1, 0.5), p=1.0),
                # area down, linear up: nearest-neighbour (the default) leaves sharp blocks
                A.Downscale(scale_range=(0.08, 0.15), p=1.0,
                            interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}),
            ], p=1.0)], size=256)]),
            (("clarity", "blurry"),),
            "GaussianBlur, MotionBlur, Defocus or Downscale at a 256 px working size: normal/sharp -> blurry",
        ),
        "sharpen": (
            A.Compose([
                A.Sharpen(alpha=(0.7, 1.0), lightness=(1.0, 1.0), method="gaussian", kernel_size=5, sigma=1.0, p=1.0),
                A.UnsharpMask(alpha=(0.3, 0.6), p=0.3),
            ]),
            (("clarity", "sharp"),),
            "Sharpen (Gaussian unsharp kernel), sometimes UnsharpMask: normal -> sharp",
        ),
        "light": (
            A.Compose([
                A.HorizontalFlip(p=0.5),
                # always applied, so no output is a copy of its source
                A.Affine(rotate=(-10, 10), scale=(0.9, 1.1), translate_percent=(-0.05, 0.05),
                         border_mode=reflect, p=1.0),
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
