"""A small real dataset for the App tests: 40 hymenoptera photos, audited, trained, validated.

Built once per test session (the FiftyOne database is per session, see conftest.py) and
reused by ``test_app_operators.py`` and ``test_app_browser.py``: the first caller runs the
stages through ``vetset.plugins.fiftyone_app.api.run_stages``, later callers find the dataset ready.
"""

from __future__ import annotations

from pathlib import Path

DATASET = "app-hym40"
PER_CLASS = 10
#: Tiny, fast training: resnet10t at 64 px for one epoch (about 10 s on 2 CPU cores).
TRAIN = {"model_name": "resnet10t", "epochs": 1, "img_size": 64, "batch_size": 16, "workers": 0}
VALIDATE = {"brain": False, "workers": 0}


def subset_tree(src: Path, dest: Path, per_class: int = PER_CLASS) -> Path:
    """``dest/{train,val}/{ants,bees}/`` with links to the first ``per_class`` JPEGs of each.

    Links, not copies: the shared data stays untouched and nothing is duplicated.
    """
    if dest.exists():
        return dest
    for split in ("train", "val"):
        for cls in ("ants", "bees"):
            folder = dest / split / cls
            folder.mkdir(parents=True)
            files = sorted(p for p in (src / split / cls).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
            for f in files[:per_class]:
                (folder / f.name).symlink_to(f.resolve())
    return dest


def validated_dataset(hymenoptera_dir: Path, workdir: Path) -> str:
    """Name of the session's ``app-hym40`` dataset after audit (if registered), train, validate."""
    import fiftyone as fo

    from vetset.core.dataset import load_dataset
    from vetset.core.manager import get_hooks
    from vetset.plugins.fiftyone_app.api import run_stages

    root = subset_tree(hymenoptera_dir, workdir / "hym40")
    if fo.dataset_exists(DATASET):
        ds = fo.load_dataset(DATASET)
        source = ((ds.info or {}).get("vetset") or {}).get("source")
        if source == str(root.resolve()) and "validation_errors" in ds.list_saved_views():
            return DATASET
        # left by another test session (FiftyOne attaches to any running database service)
        ds.delete()
    load_dataset(root, name=DATASET)
    stages = {"audit": {}} if "audit" in get_hooks().stages else {}
    stages.update({"train": TRAIN, "validate": VALIDATE})
    run_stages(DATASET, stages, out_dir=workdir / "hym40-run", log=lambda msg: None)
    return DATASET
