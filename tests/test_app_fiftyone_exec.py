"""vetset's operators run by FiftyOne itself: plugin discovery, input validation, delegation.

The plugin is installed into a temporary plugins dir, then operators are invoked by URI
through ``fiftyone.operators.execute_operator`` (what the App's server does), and a
delegated run is queued and executed by FiftyOne's ``DelegatedOperationService`` (what
``fiftyone delegated launch`` does), with its progress stored on the run document.
"""

from __future__ import annotations

import pytest
from app_data import validated_dataset

URI = "@vetset/vetset"


@pytest.fixture(scope="module")
def ds_name(hymenoptera_dir, session_tmp):
    return validated_dataset(hymenoptera_dir, session_tmp)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    import fiftyone as fo

    from vetset.plugins.fiftyone_app.launch import install_plugin

    root = tmp_path / "fo-plugins"
    monkeypatch.setattr(fo.config, "plugins_dir", str(root))
    install_plugin(root)
    return root


def test_execute_operator_by_uri(ds_name, installed):
    import fiftyone as fo
    import fiftyone.operators as foo

    ds = fo.load_dataset(ds_name)
    result = foo.execute_operator(f"{URI}/open_saved_view", dataset=ds, params={"name": "validation_errors"})
    assert result.result == {"name": "validation_errors", "count": len(ds.load_saved_view("validation_errors"))}
    # the App is told to load that saved view
    requests = result.executor.to_json()["requests"]
    assert [(r["operator_uri"], r["params"]) for r in requests] == [("set_view", {"name": "validation_errors"})]


def test_invalid_form_values_are_rejected_before_execution(ds_name, installed):
    import fiftyone as fo
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    ds = fo.load_dataset(ds_name)
    n_before = len(ds.load_saved_view("validation_errors"))
    with pytest.raises(ExecutionError, match="train__epochs"):
        foo.execute_operator(f"{URI}/train_and_validate", dataset=ds,
                             params={"train__epochs": 0, "do_validate": False})
    assert len(ds.load_saved_view("validation_errors")) == n_before


def test_delegated_label_issues_run_with_progress(ds_name, installed):
    """Queue 'find label issues', run the queue as a worker would, check run doc and dataset."""
    import fiftyone as fo
    import fiftyone.operators as foo
    import fiftyone.operators.delegated as food
    from fiftyone.operators.executor import ExecutionRunState

    ds = fo.load_dataset(ds_name)
    params = {"label_noise__method": "embeddings", "label_noise__n_folds": 3,
              "label_noise__embeddings__model_name": "resnet10t", "label_noise__embeddings__img_size": 64,
              "label_noise__embeddings__batch_size": 20}
    queued = foo.execute_operator(f"{URI}/find_label_issues", dataset=ds, params=params, request_delegation=True)
    assert queued.delegated
    dos = food.DelegatedOperationService()
    doc_id = queued.result["id"]
    assert dos.get(doc_id).run_state == ExecutionRunState.QUEUED
    dos.execute_queued_operations(operator=f"{URI}/find_label_issues", dataset_name=ds_name)

    doc = dos.get(doc_id)
    assert doc.run_state == ExecutionRunState.COMPLETED, doc.result.error if doc.result else None
    out = doc.result.result
    issues = ds.load_saved_view("label_issues")
    assert out["metrics"]["label_noise"]["label_issues"] == len(issues)
    assert out["metrics"]["label_noise"]["label_checked"] == 40
    ds.reload()
    assert ds.count("label_quality") == 40
    assert set(issues.values("id")) == set(ds.match_tags("label_issue").values("id"))
    assert doc.status is not None and doc.status.label  # last progress message stored on the run
