"""Per-image computations of the colour, clarity and exposure checks, on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vetset.core.images import DecodedImage, decode
from vetset.plugins.checks_image import ClarityOptions, ColourOptions, clarity_compute, colour_compute
from vetset.plugins.checks_quality import ExposureOptions, exposure_compute

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
