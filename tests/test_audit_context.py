"""The audit's driver-side columns: what checks read, what they stage, and what it costs per image."""

from __future__ import annotations

import hashlib
import math
import re
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from vetset.core.errors import PluginError
from vetset.plugins.audit.context import AuditContext, collect_records, read_columns


def _record(i: int, *, broken: bool = False, bad_compute: bool = False) -> tuple:
    """One image-pass record as ``audit_image`` returns it (built-in checks' keys and types)."""
    if broken:
        return (0, 0, 120, "", "", 1, 1, "cannot identify image file", ())
    exposure = {"brightness": 0.25 + i % 7 / 10, "contrast": 0.1, "entropy": 6.5, "p5": 3.0, "p99": 250.0}
    dup = {"phash": f"{i * 2654435761 % 2**64:016x}", "file_hash": hashlib.sha256(str(i).encode()).hexdigest()}
    colour = {"__error__": "ValueError: odd palette"} if bad_compute else {"colour_mode": "grayscale" if i % 5 == 0 else "colour"}
    return (32, 24, 900 + i, "RGB", "JPEG", 1, 1, None, (exposure, dup, colour, {"sharpness": float(i)}))


CHECKS = ["exposure", "duplicates", "colour", "clarity"]


def _context(cols, n):
    ids = [f"{i:024x}" for i in range(n)]
    return AuditContext.from_pass(cols, view=None, ids=ids, filepaths=[f"/d/c/{i}.jpg" for i in range(n)],
                                  labels=["c"] * n, splits=["train"] * n, classes=["c"], sample_tags=[("train",)] * n)


def test_collect_records_makes_nullable_numeric_columns():
    n = 6
    records = [_record(0), _record(1, broken=True), _record(2, bad_compute=True), _record(3), _record(4), _record(5)]
    cols = collect_records(iter(records), [f"/d/{i}.jpg" for i in range(n)], CHECKS)
    assert cols.readable.tolist() == [True, False, True, True, True, True]
    assert cols.width.tolist() == [32, 0, 32, 32, 32, 32] and cols.file_size[3] == 903
    bright = cols.computed["exposure"]["brightness"]
    assert isinstance(bright, pd.arrays.FloatingArray) and bright.dtype == "Float64" and len(bright) == n
    assert bright[1] is pd.NA and bright[0] == pytest.approx(0.25)
    assert bright.isna().tolist() == [False, True, False, False, False, False]
    # a compute that raised leaves its keys empty for that image and is reported with the file
    modes = cols.computed["colour"]["colour_mode"]
    assert modes == ["grayscale", None, None, "colour", "colour", "grayscale"]
    assert modes[3] is modes[4], "repeated strings are one object"
    assert cols.failures == {"colour": ["/d/2.jpg: ValueError: odd palette"]}
    ctx = _context(cols, n)
    assert np.isnan(ctx.column("exposure", "brightness")[1])
    assert ctx.column("clarity", "sharpness", fill=-1.0).tolist() == [0.0, -1.0, 2.0, 3.0, 4.0, 5.0]
    assert ctx.column("clarity", "sharpness", dtype=object).tolist()[:2] == [0.0, None]
    assert ctx.column("colour", "colour_mode", dtype=object)[0] == "grayscale"
    with pytest.raises(KeyError, match="computed no 'nope'"):
        ctx.column("clarity", "nope")


def test_numeric_columns_keep_exact_values_and_write_as_json():
    import json
    from functools import partial

    from vetset.core.result import to_jsonable

    recs = [(1, 1, 1, "L", "PNG", 1, 1, None, ({"k": v},)) for v in (1, 2.5, None)]
    k = collect_records(iter(recs), ["a", "b", "c"], ["x"]).computed["x"]["k"]
    assert k.dtype == "Float64" and k.tolist()[:2] == [1.0, 2.5] and k[2] is pd.NA
    assert json.dumps({"k": k}, default=partial(to_jsonable, strict=True)) == '{"k": [1.0, 2.5, null]}'
    big = collect_records(iter([(1, 1, 1, "L", "PNG", 1, 1, None, ({"k": v},)) for v in (2**53 + 1, 3)]),
                          ["a", "b"], ["x"]).computed["x"]["k"]
    assert big.dtype == "Int64" and big[0] == 2**53 + 1  # int64, not through float64
    with pytest.raises(ValueError, match="pass a fill for an integer column"):
        _context(collect_records(iter(recs), ["a", "b", "c"], ["x"]), 3).column("x", "k", np.int64)


def test_numeric_columns_widen_and_fall_back():
    recs = [(1, 1, 1, "L", "PNG", 1, 1, None, ({"k": v},)) for v in (3, 4.5, None)]
    k = collect_records(iter(recs), ["a", "b", "c"], ["x"]).computed["x"]["k"]
    assert k.dtype == "Float64" and k.to_numpy(dtype=object, na_value=None).tolist() == [3.0, 4.5, None]
    ints = collect_records(iter([(1, 1, 1, "L", "PNG", 1, 1, None, ({"k": v},)) for v in (3, 2**40)]), ["a", "b"], ["x"])
    assert ints.computed["x"]["k"].dtype == "Int64" and ints.computed["x"]["k"][1] == 2**40
    mixed = collect_records(iter([(1, 1, 1, "L", "PNG", 1, 1, None, ({"k": v},)) for v in (1, "two", 2**70)]),
                            ["a", "b", "c"], ["x"])
    assert mixed.computed["x"]["k"] == [1, "two", 2**70]
    # integers beyond 2**53 never go through float64: the column stays a list of exact values
    exact = collect_records(iter([(1, 1, 1, "L", "PNG", 1, 1, None, ({"k": v},)) for v in (2**60 + 1, 2.5)]),
                            ["a", "b"], ["x"]).computed["x"]["k"]
    assert exact == [2**60 + 1, 2.5] and exact[0] == 2**60 + 1
    beyond = collect_records(iter([(1, 1, 1, "L", "PNG", 1, 1, None, ({"k": v},)) for v in (3, 2**64)]),
                             ["a", "b"], ["x"]).computed["x"]["k"]
    assert beyond == [3, 2**64]  # beyond int64: a list too
    arrays = collect_records(iter([(1, 1, 1, "L", "PNG", 1, 1, None, ({"k": np.array([i, i])},)) for i in range(2)]),
                             ["a", "b"], ["x"]).computed["x"]["k"]
    assert isinstance(arrays, list) and arrays[1].tolist() == [1, 1]  # other values: a list, whatever its length
    with pytest.raises(PluginError, match="returned 1 records for 2 images"):
        collect_records(iter(recs[:1]), ["a", "b"], ["x"])


def test_set_field_stages_arrays_and_rejects_bad_values():
    n = 4
    ctx = _context(collect_records(iter(_record(i) for i in range(n)), [str(i) for i in range(n)], CHECKS), n)
    from vetset.plugins.audit._staging import _batch

    ctx.set_field("f", np.array([0.5, np.nan, np.inf, 2.0]), "float")
    ctx.set_field("g", [1.5, None, float("nan"), 3], "float")
    ctx.set_field("i", [1, None, 3, 4], "int")
    ctx.set_field("b", [True, None, False, True], "bool")
    ctx.set_field("s", ["x", None, 3, "y"], "str")
    got = {name: _batch(*ctx.fields[name], 0, n) for name in ctx.fields}
    assert got == {"f": [0.5, None, None, 2.0], "g": [1.5, None, None, 3.0], "i": [1, None, 3, 4],
                   "b": [True, None, False, True], "s": ["x", None, "3", "y"]}
    assert type(got["i"][0]) is int and type(got["b"][0]) is bool
    assert _batch(*ctx.fields["f"], 2, 4) == [None, 2.0]
    with pytest.raises(PluginError, match="'h': values are not all float"):
        ctx.set_field("h", ["a", None, 1, 2], "float")
    # what ctx.column gives (NaN where unreadable) may carry an int or bool field
    ctx.set_field("ci", np.array([1.0, np.nan, 3.0, 4.0]), "int")
    ctx.set_field("cb", np.array([1.0, np.nan, 0.0, 1.0]), "bool")
    ctx.set_field("big", [2**62 + 1, None, -1, 0], "int")
    assert _batch(*ctx.fields["ci"], 0, n) == [1, None, 3, 4] and _batch(*ctx.fields["cb"], 0, n) == [True, None, False, True]
    assert _batch(*ctx.fields["big"], 0, 1) == [2**62 + 1]  # exact, not through float64
    ctx.set_field("big2", [2**53 + 1, 2.0, float("nan"), None], "int")  # floats beside big ints: still exact
    ctx.set_field("s2", [float("nan"), 3, None, "x"], "str")
    ctx.set_field("b2", [False, True, np.float32("nan"), True], "bool")
    ctx.set_field("b3", np.array([0, 1, 1, 0]), "bool")
    ctx.set_field("i2", [1, 2, float("inf"), None], "int")  # an infinity is missing, as in a float array
    assert _batch(*ctx.fields["big2"], 0, n) == [2**53 + 1, 2, None, None]
    assert _batch(*ctx.fields["s2"], 0, n) == [None, "3", None, "x"]
    assert _batch(*ctx.fields["b2"], 0, n) == [False, True, None, True]
    assert _batch(*ctx.fields["b3"], 0, n) == [False, True, True, False]
    assert _batch(*ctx.fields["i2"], 0, n) == [1, 2, None, None]
    # pandas' conversion (pd.array with a nullable dtype) decides; its message is quoted
    bad = [(np.array([1.0, np.nan, 1.5, 2.0]), "int", "cannot safely cast non-equivalent float64 to int64"),
           (np.ones((4, 2)), "float", r"got an array of shape \(4, 2\)"),
           (["no", None, True, False], "bool", "Need to pass bool-like values"),
           ([2, 0, 1, 0], "bool", "Need to pass bool-like values"),
           ([0, 1, None, True], "bool", "Need to pass bool-like values"),  # numbers and booleans mixed
           (np.array([2.0**63, 0, 0, 0]), "int", "cannot safely cast"),
           ([1.5, None, 2, 3], "int", "cannot safely cast"),
           (np.array([2, 0, 1, 0]), "bool", "Need to pass bool-like values"),
           ([2**70, 1, 2, 3], "int", "too large"),
           (np.array([2**64 - 1, 0, 0, 0], dtype=np.uint64), "int", "cannot safely cast non-equivalent uint64"),
           (np.array(["2024-01-01"] * 4, dtype="datetime64[D]"), "float", "datetime64"),
           (np.array([True, False, True, False]), "int", "got booleans"),
           ([True, 1.0, 2.0, 3.0], "float", "True is not a number")]
    for values, kind, why in bad:
        with pytest.raises(PluginError, match=f"'h': values are not all {kind} or None .*{why}"):
            ctx.set_field("h", values, kind)
    for reserved in ("filepath", "tags", "ground_truth", "_rand", "a.b", "id", "$x"):
        with pytest.raises(PluginError, match=re.escape(f"audit field '{reserved}' is not a field checks may write")):
            ctx.set_field(reserved, ["x"] * n, "str")
    with pytest.raises(PluginError, match="has 3 values for 4 samples"):
        ctx.set_field("h", [1, 2, 3], "int")
    with pytest.raises(PluginError, match="written by two checks"):
        ctx.set_field("f", [1, 2, 3, 4], "float")
    with pytest.raises(PluginError, match="kind must be one of"):
        ctx.set_field("h", [1, 2, 3, 4], "double")


def test_driver_columns_stay_small_per_image():
    """What the driver keeps per image after the pass, built-in checks' keys (tracemalloc, no timing).

    Measured 552 bytes: the strings that must stay (id 81, path 94, sha256 121, phash 73),
    the image-pass numbers (11 x 9) and the staged fields (4 floats x 9, 2 string
    pointers, a boolean). Lists of Python floats and dicts, as before the columns, cost
    over 1.1 KB for the same, so the bound catches that regression.
    """
    n = 20_000
    paths = [f"/data/cifar10/train/class/{i:06d}.jpg" for i in range(n)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cols = collect_records((_record(i) for i in range(n)), paths, CHECKS)
    ctx = _context(cols, n)
    for key in ("brightness", "contrast", "entropy"):
        ctx.set_field(key, ctx.column("exposure", key), "float")
    ctx.set_field("sharpness", ctx.column("clarity", "sharpness"), "float")
    ctx.set_field("phash", ctx.computed["duplicates"]["phash"], "str")
    ctx.set_field("colour_mode", ctx.computed["colour"]["colour_mode"], "str")
    ctx.set_field("exif_rotated", [False] * n, "bool")
    per_image = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    assert per_image < 600, f"{per_image:.0f} bytes per image"
    assert math.isclose(ctx.column("exposure", "brightness")[7], 0.25)


def test_read_columns_shares_labels_and_tag_sets(digits_dir, fresh_name):
    import fiftyone as fo

    from vetset.core.dataset import load_dataset

    ds, _ = load_dataset(digits_dir, name=fresh_name)
    ids, paths, labels, splits, tags = read_columns(ds)
    total = len(ds)
    fo.delete_dataset(ds.name)
    assert len(ids) == len(paths) == len(labels) == len(tags) == total > 100
    same = [i for i, t in enumerate(tags) if t == tags[0]]
    assert len(same) > 1 and all(tags[i] is tags[same[0]] for i in same)
    assert isinstance(tags[0], tuple) and splits[0] in tags[0]
    zero = [lab for lab in labels if lab == labels[0]]
    assert all(lab is labels[0] for lab in zero)


def test_write_all_declares_new_fields_of_every_kind(digits_dir, fresh_name):
    import fiftyone as fo

    from vetset.core.dataset import load_dataset
    from vetset.plugins.audit.context import write_all

    ds, _ = load_dataset(digits_dir, name=fresh_name)
    try:
        view = ds.limit(5)
        n = 5
        ids, paths, labels, splits, tags = read_columns(view)
        cols = collect_records(iter(_record(i) for i in range(n)), paths, CHECKS)
        ctx = AuditContext.from_pass(cols, view=view, ids=ids, filepaths=paths, labels=labels, splits=splits,
                                     classes=sorted(set(labels)), sample_tags=tags)
        meta = {"_cls": "ImageMetadata", "size_bytes": 10, "mime_type": "image/png", "width": 8, "height": 8,
                "num_channels": 1}
        ctx.set_field("meta2", [meta, None, meta, meta, meta], "metadata")
        ctx.set_field("score", np.array([0.5, np.nan, 1.0, 2.0, 3.0]), "float")
        ctx.set_field("count", [1, None, 2**53 + 1, 4, 5], "int")
        ctx.set_field("flag", [True, None, False, True, False], "bool")
        ctx.set_field("word", ["a", None, "b", "c", "d"], "str")
        ctx.tag("checked_by_test", np.array([True, False, True, False, False]))
        write_all(ctx, [])
        schema = ds.get_field_schema()
        assert isinstance(schema["meta2"], fo.EmbeddedDocumentField) and isinstance(schema["count"], fo.IntField)
        assert view.values("meta2.width") == [8, None, 8, 8, 8]
        assert view.values("score") == [0.5, None, 1.0, 2.0, 3.0]
        assert view.values("count") == [1, None, 2**53 + 1, 4, 5]
        assert view.values("flag") == [True, None, False, True, False]
        assert view.values("word") == ["a", None, "b", "c", "d"]
        assert len(ds.match_tags("checked_by_test")) == 2
    finally:
        fo.delete_dataset(ds.name)


def test_the_block_reports_the_workers_that_ran(digits_dir, fresh_name):
    import fiftyone as fo

    from vetset.core.dataset import load_dataset
    from vetset.core.manager import Hooks
    from vetset.plugins.audit.stage import AuditOptions, run_audit

    ds, _ = load_dataset(digits_dir, name=fresh_name)
    try:
        view = ds.limit(300)
        one_chunk = run_audit(view, AuditOptions(checks=["size"], workers=2, chunk_size=1000), Hooks(), log=lambda m: None)
        assert one_chunk["executor"] == {"name": "local", "workers": 0}  # a single chunk runs in this process
        chunks = run_audit(view, AuditOptions(checks=["size"], workers=2, chunk_size=100), Hooks(), log=lambda m: None)
        assert chunks["executor"] == {"name": "local", "workers": 2}
    finally:
        fo.delete_dataset(ds.name)


def test_pass_chunks_shrink_toward_the_end_and_keep_every_path_in_order():
    from vetset.plugins.audit.stage import pass_chunks

    for n, workers in ((398, 2), (10_000, 2), (10_000, 16), (7, 2), (0, 2), (300, 0)):
        paths = [f"/d/{i}.jpg" for i in range(n)]
        chunks = pass_chunks(paths, workers)
        sizes = [len(c) for c in chunks]
        assert [p for c in chunks for p in c] == paths
        assert sizes == sorted(sizes, reverse=True)
        assert all(8 <= s <= 256 for s in sizes[:-1]) and (not sizes or 1 <= sizes[-1] <= 256)
        if n >= 1000:
            assert sizes[0] == min(256, -(-n // (4 * workers))) and sizes[-2] == 8  # few messages first, a short tail
    assert [len(c) for c in pass_chunks(["p"] * 398, 2)][:3] == [50, 44, 38]  # 398/8, 348/8, 304/8
    assert [len(c) for c in pass_chunks(["p"] * 250, 2, chunk_size=100)] == [100, 100, 50]
