"""The audit on a corpus of awkward files, generated at test time from real photos.

Every file yields its documented result (readable with the right reading, or unreadable
with a clear reason), the run finishes, and the source folder is left untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

ANT = "train/ants/0013035.jpg"  # 768x512 landscape photo
BEE = "train/bees/1092977343_cb42b38d62.jpg"


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` (no pixel data): a decompression bomb header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def make_corpus(root: Path, hym: Path) -> dict[str, dict]:
    """Write the corpus under ``root/{train,val}/{ants,bees}``; returns file name -> expectation."""
    ant = Image.open(hym / ANT).convert("RGB")
    bee = Image.open(hym / BEE).convert("RGB")
    ant_bytes = (hym / ANT).read_bytes()
    a, b = root / "train" / "ants", root / "train" / "bees"
    va = root / "val" / "ants"
    for d in (a, b, va, root / "val" / "bees"):
        d.mkdir(parents=True, exist_ok=True)
    exp: dict[str, dict] = {}

    (a / "truncated.jpg").write_bytes(ant_bytes[: len(ant_bytes) * 6 // 10])
    exp["truncated.jpg"] = {"reason": "truncated file"}
    (a / "empty.jpg").write_bytes(b"")
    exp["empty.jpg"] = {"reason": "empty file"}
    (a / "notes.jpg").write_text("these are my notes, not a photo\n", encoding="utf-8")
    exp["notes.jpg"] = {"reason": "not an image"}
    (b / "drawing.png").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', encoding="utf-8")
    exp["drawing.png"] = {"reason": "not an image"}
    (b / "huge.png").write_bytes(_png_header(100_000, 100_000))
    exp["huge.png"] = {"reason": "decompression bomb"}
    os.symlink("loop_b.jpg", a / "loop_a.jpg")
    os.symlink("loop_a.jpg", a / "loop_b.jpg")
    exp["loop_a.jpg"] = exp["loop_b.jpg"] = {"reason": "symlink loop"}

    ant.convert("CMYK").save(a / "cmyk.jpg", quality=90)
    exp["cmyk.jpg"] = {"mode": "CMYK", "colour_mode": "colour", "channels": 4, "size": (768, 512)}
    gray16 = (np.asarray(ant.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(gray16).save(b / "gray16.png")
    exp["gray16.png"] = {"mode": "I;16", "colour_mode": "grayscale", "channels": 1, "size": (768, 512)}
    pal = bee.quantize(64)
    pal.info["transparency"] = 0
    pal.save(b / "palette_transparent.png", transparency=0)
    exp["palette_transparent.png"] = {"mode": "P", "colour_mode": "colour", "size": bee.size}
    ant.convert("LA").save(a / "gray_alpha.png")
    exp["gray_alpha.png"] = {"mode": "LA", "colour_mode": "grayscale", "channels": 2, "size": (768, 512)}
    rgba = bee.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(b / "rgba.png")
    exp["rgba.png"] = {"mode": "RGBA", "colour_mode": "colour", "channels": 4, "size": bee.size}
    frames = [ant.crop((i * 40, 0, i * 40 + 300, 200)) for i in range(3)]
    frames[0].save(b / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    exp["animated.gif"] = {"mode": "P", "frames": 3, "size": (300, 200)}
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    ant.save(va / "rotated.jpg", exif=exif, quality=90)
    exp["rotated.jpg"] = {"mode": "RGB", "exif_rotated": True, "orientation": "portrait", "size": (512, 768)}
    ant.convert("L").convert("RGB").save(va / "gray_as_rgb.jpg", quality=85)
    exp["gray_as_rgb.jpg"] = {"mode": "RGB", "colour_mode": "grayscale", "size": (768, 512)}
    ant.convert("L").point(lambda v: 255 if v > 110 else 0).convert("1").save(va / "two_level.png")
    exp["two_level.png"] = {"mode": "1", "colour_mode": "bw", "size": (768, 512)}
    (va / "fourmi_ñandú_蚂蚁.jpg").write_bytes(ant_bytes)
    exp["fourmi_ñandú_蚂蚁.jpg"] = {"mode": "RGB", "colour_mode": "colour", "size": (768, 512)}
    return exp


def _tree_state(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p)] = "link:" + os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def dsname(fresh_name):
    """``fresh_name``, with any dataset of that name left by an earlier session deleted first."""
    import fiftyone as fo

    if fo.dataset_exists(fresh_name):
        fo.delete_dataset(fresh_name)
    return fresh_name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, hymenoptera_dir):
    root = tmp_path_factory.mktemp("bad") / "data"
    expected = make_corpus(root, hymenoptera_dir)
    return root, expected


def test_bad_input_each_file_gets_its_documented_result(corpus, dsname, hooks):
    from vetset.core.dataset import load_dataset
    from vetset.plugins.audit.stage import AuditOptions, run_audit

    root, expected = corpus
    before = _tree_state(root)
    ds, _ = load_dataset(root, name=dsname)
    messages: list[str] = []
    block = run_audit(ds, AuditOptions(workers=0), hooks, log=messages.append)
    assert _tree_state(root) == before, "the audit must never modify the source folder"

    names = [Path(p).name for p in ds.values("filepath")]
    assert sorted(names) == sorted(expected)
    rows = dict(zip(names, zip(ds.values("unreadable_reason"), ds.values("tags"), ds.values("colour_mode"),
                               ds.values("orientation"), ds.values("exif_rotated"), ds.values("metadata"))))
    for name, exp in expected.items():
        reason, tags, colour, orient, rotated, meta = rows[name]
        if "reason" in exp:
            assert reason == exp["reason"], name
            assert "unreadable" in tags and meta is None and colour is None, name
            assert any(name in m and exp["reason"] in m for m in messages), f"no clear message for {name}"
            continue
        assert reason is None and "unreadable" not in tags, (name, reason)
        assert (meta.width, meta.height) == exp["size"], name
        if "colour_mode" in exp:
            assert colour == exp["colour_mode"], name
        if "channels" in exp:
            assert meta.num_channels == exp["channels"], name
        assert rotated is exp.get("exif_rotated", False), name
        if "orientation" in exp:
            assert orient == exp["orientation"], name
    assert "animated" in rows["animated.gif"][1] and "exif_rotated" in rows["rotated.jpg"][1]

    un = block["checks"]["unreadable"]
    bad = sorted(n for n, e in expected.items() if "reason" in e)
    assert un["count"] == len(bad) == block["metrics"]["unreadable"]
    assert sorted(Path(f["filepath"]).name for f in un["files"]) == bad
    assert all(f["explanation"] for f in un["files"])
    assert un["by_reason"] == {"decompression bomb": 1, "empty file": 1, "not an image": 2, "symlink loop": 2,
                               "truncated file": 1}
    assert [Path(a["filepath"]).name for a in un["animated"]] == ["animated.gif"] and un["animated"][0]["frames"] == 3
    # the unreadable files are left out of every count and coverage table
    assert block["num_readable"] == len(expected) - len(bad)
    assert sum(block["class_counts"]["all"].values()) == block["num_readable"]


def test_bad_input_pixels_are_read_correctly(corpus):
    """16-bit, palette+transparency, LA, RGBA, CMYK and EXIF files decode to the right RGB pixels."""
    from vetset.core.images import decode

    root, _ = corpus
    ant = root / "train" / "ants"
    gray16 = decode(str(root / "train" / "bees" / "gray16.png"))
    src = np.asarray(Image.open(root / "train" / "bees" / "gray16.png"), dtype=np.float64) / 257.0
    assert gray16.mode == "I;16" and np.abs(gray16.array[..., 0] - src).max() <= 0.51
    assert (gray16.array[..., 0] == gray16.array[..., 2]).all() and gray16.array.mean() > 40

    pal = decode(str(root / "train" / "bees" / "palette_transparent.png"))
    p_img = Image.open(root / "train" / "bees" / "palette_transparent.png")
    transparent = np.asarray(p_img) == 0
    assert transparent.any() and (pal.array[transparent] == 255).all(), "transparent pixels composite on white"

    rgba = decode(str(root / "train" / "bees" / "rgba.png"))
    src_rgb = np.asarray(Image.open(root / "train" / "bees" / "rgba.png"))[..., :3].astype(np.float64)
    expected = src_rgb * (200 / 255) + 255 * (55 / 255)
    assert np.abs(rgba.array - expected).max() <= 1.5

    cmyk = decode(str(ant / "cmyk.jpg"))
    orig = decode(str(root / "val" / "ants" / "fourmi_ñandú_蚂蚁.jpg"))
    assert cmyk.mode == "CMYK" and np.abs(cmyk.array.astype(int) - orig.array.astype(int)).mean() < 12

    rot = decode(str(root / "val" / "ants" / "rotated.jpg"))
    assert rot.exif_orientation == 6 and rot.array.shape == (768, 512, 3)
    # rotated clockwise for display: the source's top-left corner ends up top-right
    assert np.abs(rot.array[:40, -40:].astype(int).mean() - orig.array[:40, :40].astype(int).mean()) < 8


def test_bad_input_cli_run_finishes(corpus, tmp_path, dsname):
    """`recipes run` with an audit-only recipe: exit 0, one clear line per unreadable file."""
    root, expected = corpus
    recipe = tmp_path / "audit_only.yaml"
    recipe.write_text("name: audit-only\nstages:\n  audit: {workers: 2}\n", encoding="utf-8")
    out = tmp_path / "out"
    proc = run_cli("run", str(recipe), "--data", str(root), "--out", str(out), "--dataset", dsname)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    block = result["stages"]["audit"]
    assert block["metrics"]["unreadable"] == sum(1 for e in expected.values() if "reason" in e)
    text = " ".join(proc.stdout.split())  # the console wraps long lines
    for line_part in ("truncated.jpg: truncated file", "empty.jpg: empty file", "notes.jpg: not an image",
                      "huge.png: decompression bomb", "symlink loop"):
        assert line_part in text, line_part
    assert "audit/unreadable" in proc.stdout


def test_a_missing_file_is_file_not_found(tmp_path):
    from vetset.core.images import decode, probe
    from vetset.plugins.audit.checks.unreadable import explain

    missing = str(tmp_path / "gone.jpg")
    assert decode(missing).error == probe(missing) == "file not found"
    assert explain("file not found").startswith("No file at this path")
