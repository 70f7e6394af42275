"""One safe decode per image, shared by every check, the trainer and the augmenter.

Handles what real folders contain: EXIF orientation (applied, and reported), palette
images with transparency, RGBA/LA (composited on white), CMYK and YCbCr JPEGs, 16-bit and
32-bit grayscale PNG/TIFF (scaled to 8 bits), animated GIFs (first frame), truncated files
(reported, never half-decoded silently), and decompression bombs (Pillow's
``Image.MAX_IMAGE_PIXELS`` limit, about 89.5 megapixels, caught and reported).

For large JPEGs :func:`decode` can use Pillow's draft mode, which lets libjpeg decode at
1/2, 1/4 or 1/8 scale (DCT scaling) — several times faster than a full decode followed
by a resize, and the reason checks may ask for ``max_side``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

#: File extensions treated as images (torchvision's ``IMG_EXTENSIONS`` plus GIF).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

_EXIF_ORIENTATION = 0x0112
#: EXIF orientation value -> the transpose that undoes it (as ``ImageOps.exif_transpose``).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass
class DecodedImage:
    """A decoded image and what the decode learned about the file.

    Attributes:
        path: the file path.
        array: ``uint8`` array, shape ``(H, W, 3)`` RGB, after EXIF orientation; possibly
            reduced when decoded with ``max_side`` (see ``scale``). ``None`` if unreadable.
        width, height: full-resolution size in pixels *after* EXIF orientation.
        mode: the file's Pillow mode (``"RGB"``, ``"P"``, ``"CMYK"``, ``"I;16"``...).
        format: the file's Pillow format (``"JPEG"``, ``"PNG"``...).
        exif_orientation: EXIF orientation tag value 1-8 (1 when absent).
        exif_rotated: the tag transposes the image (values 2-8).
        n_frames: number of frames (animated GIF/WebP/TIFF > 1).
        scale: ``array`` width / full width (1.0 without draft reduction).
        file_size: bytes on disk.
        error: ``None`` when readable, else a short reason (``"empty file"``,
            ``"truncated file"``, ``"not an image"``, ``"decompression bomb"``...).
    """

    path: str
    array: np.ndarray | None = None
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""
    exif_orientation: int = 1
    exif_rotated: bool = False
    n_frames: int = 1
    scale: float = 1.0
    file_size: int = 0
    error: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Transparent pixels (RGBA, LA, palette with transparency) are composited on white;
    16/32-bit integer and float images are scaled from their own min..max range to 0..255
    (a 16-bit PNG uses 0..65535; a plain ``convert("L")`` would clip it to white).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0  # 0..65535 -> 0..255, the same map as ImageMagick's depth 8
        else:
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    return img.convert("RGB")


def probe(path: str) -> str | None:
    """Cheap readability probe: ``None`` when the header parses, else the reason.

    Reads only the file header (``Image.open`` is lazy), so it costs well under a
    millisecond per file; truncated pixel data is found later by :func:`decode`.
    """
    try:
        if os.path.islink(path) and not os.path.exists(path):
            return "broken symlink"
        size = os.path.getsize(path)
    except OSError as exc:
        return f"cannot stat file ({exc.strerror or exc})"
    if size == 0:
        return "empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > (Image.MAX_IMAGE_PIXELS or float("inf")):
                    return "decompression bomb"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "decompression bomb"
    except UnidentifiedImageError:
        return "not an image"
    except OSError as exc:
        return f"cannot read file ({exc})"
    except Exception as exc:  # Pillow raises assorted errors on malformed headers
        return f"malformed image header ({type(exc).__name__})"
    return None


def decode(path: str, max_side: int | None = None) -> DecodedImage:
    """Decode one image file safely to an RGB ``uint8`` array.

    Args:
        path: file path.
        max_side: when given, JPEGs are decoded with Pillow's draft mode so that the
            result is no smaller than ``max_side`` on its longer side (libjpeg DCT
            scaling by 1/2, 1/4 or 1/8); other formats decode at full size.

    Returns:
        A :class:`DecodedImage`; never raises for bad files — ``error`` says why.
    """
    out = DecodedImage(path=path)
    reason = probe(path)
    if reason is not None:
        out.error = reason
        return out
    out.file_size = os.path.getsize(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                out.mode, out.format = img.mode, img.format or ""
                out.n_frames = int(getattr(img, "n_frames", 1) or 1)
                full_w, full_h = img.size
                try:
                    out.exif_orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
                except Exception:
                    out.exif_orientation = 1
                if out.exif_orientation not in range(1, 9):
                    out.exif_orientation = 1
                out.exif_rotated = out.exif_orientation != 1
                if max_side and img.format == "JPEG" and max(full_w, full_h) > max_side:
                    # draft keeps the result >= requested size, so ask for the scaled box
                    ratio = max_side / max(full_w, full_h)
                    img.draft("RGB", (max(1, int(full_w * ratio)), max(1, int(full_h * ratio))))
                img.load()
                rgb = to_rgb(img)
                if out.exif_rotated:
                    rgb = rgb.transpose(_TRANSPOSE[out.exif_orientation])
                swap = out.exif_orientation in (5, 6, 7, 8)
                out.width, out.height = (full_h, full_w) if swap else (full_w, full_h)
                out.array = np.asarray(rgb, dtype=np.uint8)
                out.scale = out.array.shape[1] / out.width if out.width else 1.0
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        out.error = "decompression bomb"
    except OSError as exc:
        msg = str(exc)
        out.error = "truncated file" if "truncated" in msg or "broken data stream" in msg else f"cannot decode ({msg})"
    except Exception as exc:
        out.error = f"cannot decode ({type(exc).__name__}: {exc})"
    if out.error is not None:
        out.array = None
    return out


def load_rgb(path: str) -> np.ndarray:
    """Decode ``path`` to an ``(H, W, 3)`` ``uint8`` RGB array, EXIF-oriented.

    Raises:
        ValueError: the file is unreadable; the message names the file and the reason.
    """
    img = decode(path)
    if img.array is None:
        raise ValueError(f"{path}: {img.error}")
    return img.array
