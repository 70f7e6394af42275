"""Per-image computations of the colour, clarity and exposure checks, on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vetset.core.images import DecodedImage, decode
from vetset.plugins.audit.checks.coverage import ClarityOptions, ColourOptions, clarity_compute, colour_compute
from vetset.plugins.audit.checks.quality import ExposureOptions, exposure_compute

BEE = "train/bees/1092977343_cb42b38d62.jpg"  # 500x333 colour photo


def _img(arr: np.ndarray, mode: str = "RGB") -> DecodedImage:
    return DecodedImage(path="<array>", array=np.ascontiguousarray(arr), width=arr.shape[1], height=arr.shape[0], mode=mode)


@pytest.fixture(scope="module")
def bee(hymenoptera_dir) -> np.ndarray:
    return decode(str(hymenoptera_dir / BEE)).array


def test_sharpness_compares_across_resolutions_and_finds_blur(bee):
    opts = ClarityOptions()
    score = lambda a: clarity_compute(_img(a), opts)["sharpness"]  # noqa: E731
    native = lambda a: cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()  # noqa: E731
    h, w = bee.shape[:2]
    double = cv2.resize(bee, (w * 2, h * 2), interpolation=cv2.INTER_CUBIC)
    half = cv2.resize(bee, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    s, s2, s_half = score(bee), score(double), score(half)
    assert s > opts.sharp_above and 0.75 < s2 / s < 1.33 and 0.6 < s_half / s < 1.33
    assert native(bee) / native(double) > 8  # without the fixed size, the same photo reads 10x blurrier
    blurred = cv2.GaussianBlur(bee, (0, 0), 0.01 * max(h, w))
    assert score(blurred) < opts.blurry_below < score(cv2.GaussianBlur(bee, (0, 0), 0.005 * max(h, w))) < s
    assert score(np.full_like(bee, 128)) == 0.0


def test_colour_bins_from_pixels(bee, hymenoptera_dir, cifar_test_dir):
    opts = ColourOptions()
    assert colour_compute(_img(bee), opts)["colour_mode"] == "colour"
    gray = cv2.cvtColor(cv2.cvtColor(bee, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    assert colour_compute(_img(gray), opts) == {"colour_mode": "grayscale", "colour_fraction": 0.0}
    noisy = np.clip(gray.astype(int) + np.random.default_rng(0).integers(-4, 5, gray.shape), 0, 255).astype(np.uint8)
    assert colour_compute(_img(noisy), opts)["colour_mode"] == "grayscale"  # chroma noise within the tolerance
    two = np.where(gray > 110, 255, 0).astype(np.uint8)
    assert colour_compute(_img(two), opts)["colour_mode"] == "bw"
    # the CIFAR-10 airplanes: 61 of 1,000 are grayscale or two-level (old photos, line drawings)
    found = [colour_compute(decode(str(p)), opts)["colour_mode"] for p in sorted((cifar_test_dir / "airplane").iterdir())]
    assert len(found) == 1000 and sum(m != "colour" for m in found) == 61
    assert colour_compute(decode(str(cifar_test_dir / "airplane" / "0013.jpg")), opts)["colour_mode"] == "grayscale"


def test_exposure_flags_on_altered_photos(bee):
    opts = ExposureOptions()
    stats = lambda a: exposure_compute(_img(a), opts)  # noqa: E731
    normal = stats(bee)
    assert normal["p99"] > opts.dark_p99 and normal["p5"] < opts.overexposed_p5
    assert normal["contrast"] > opts.low_contrast and normal["entropy"] > opts.low_entropy_bits
    dark = stats((bee * 0.2).astype(np.uint8))
    assert dark["p99"] < opts.dark_p99 and dark["brightness"] < normal["brightness"] / 4
    over = stats((bee * 0.04 + 245).astype(np.uint8))
    assert over["p5"] > opts.overexposed_p5
    flat = stats((bee * 0.03 + 100).astype(np.uint8))
    assert flat["contrast"] < opts.low_contrast and flat["entropy"] < opts.low_entropy_bits
    assert stats(np.full_like(bee, 77)) == {"brightness": round(77 / 255, 4), "contrast": 0.0, "entropy": 0.0,
                                            "p5": round(77 / 255, 4), "p99": round(77 / 255, 4)}


def _pillow_only(monkeypatch, path: str, **kwargs) -> DecodedImage:
    """:func:`decode` with the OpenCV JPEG path switched off (Pillow decodes everything)."""
    import vetset.core.images as images

    with monkeypatch.context() as m:
        m.setattr(images, "_decode_jpeg_opencv", lambda *a: None)
        return images.decode(path, **kwargs)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_opencv_jpeg_decode_equals_pillow_for_every_orientation(tmp_path, monkeypatch, mode, bee):
    from PIL import Image

    import vetset.core.images as images

    calls = []
    real = images._decode_jpeg_opencv
    monkeypatch.setattr(images, "_decode_jpeg_opencv", lambda *a: calls.append(a[2]) or real(*a))
    photo = Image.fromarray(bee).convert(mode)  # 500x333, not square, so every transpose differs
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"{mode}-{orientation}.jpg"
        photo.save(path, "JPEG", exif=exif.tobytes(), quality=90)
        for max_side in (None, 250, 120, 60):  # full size, then DCT scales 1/2, 1/4, 1/8
            fast = decode(str(path), max_side=max_side)
            slow = _pillow_only(monkeypatch, str(path), max_side=max_side)
            assert fast.error is None and fast.array.dtype == np.uint8 and fast.array.shape[2] == 3
            assert np.array_equal(fast.array, slow.array), (orientation, max_side)
            assert (fast.width, fast.height, fast.scale, fast.exif_orientation) == \
                (slow.width, slow.height, slow.scale, slow.exif_orientation)
    assert calls.count(1) == 8 and {2, 4, 8} <= set(calls)  # the OpenCV path ran at every scale


def test_opencv_jpeg_decode_leaves_truncated_and_cmyk_files_to_pillow(tmp_path, hymenoptera_dir, bee):
    from PIL import Image

    data = (hymenoptera_dir / BEE).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])  # no EOI marker: libjpeg would fill the rest with gray
    assert decode(str(cut)).error == "truncated file"
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(bee).convert("CMYK").save(cmyk, "JPEG", quality=95)
    img = decode(str(cmyk))
    assert img.mode == "CMYK" and img.array.shape == bee.shape
    assert np.abs(img.array.astype(int) - bee).mean() < 4  # Pillow's CMYK conversion, not OpenCV's


def test_png_exif_after_the_pixel_data_still_orients(tmp_path, bee):
    """Pillow reads a PNG's eXIf chunk that follows IDAT only on load(); the orientation is read after it."""
    import io
    import struct

    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(bee).resize((60, 40)).save(buf, "PNG", exif=exif)
    data, pos, chunks = buf.getvalue(), 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos:pos + 12 + length]))
        pos += 12 + length
    exif_chunk = next(c for t, c in chunks if t == b"eXIf")
    others = [c for t, c in chunks if t not in (b"eXIf", b"IEND")]
    path = tmp_path / "exif-after-idat.png"
    path.write_bytes(data[:8] + b"".join(others) + exif_chunk + chunks[-1][1])
    img = decode(str(path))
    assert img.exif_orientation == 6 and (img.width, img.height) == (40, 60) and img.array.shape == (60, 40, 3)


def test_an_opencv_without_imread_color_rgb_decodes_with_pillow(monkeypatch, hymenoptera_dir, bee):
    """OpenCV < 4.11 has no IMREAD_COLOR_RGB: JPEGs then decode with Pillow, not as errors."""
    monkeypatch.delattr(cv2, "IMREAD_COLOR_RGB")
    img = decode(str(hymenoptera_dir / BEE))
    assert img.error is None and np.array_equal(img.array, bee)
