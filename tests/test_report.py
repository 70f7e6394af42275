"""The report stage: page assembly through the section hook, result schema, numbers,
size caps, ``recipes report`` and ``fail_on`` gating, on real hymenoptera/digits images."""

from __future__ import annotations

import copy
import json
import re

import pytest
from report_plugin import (
    AUDIT_BUILTINS,
    BROKEN_TITLE,
    PLUGIN_NAME,
    SECTION_TITLE,
    ClassStatsPlugin,
    audit_run,
    make_hooks,
    resolve_key,
)

from vetset.core import manager
from vetset.core.recipe import parse_recipe
from vetset.core.report_kit import fmt
from vetset.core.result import lookup, read_result
from vetset.core.result_schema import ResultSchemaError, schema_errors, validate_result
from vetset.core.run import Run
from vetset.plugins.report.actions import recommended_actions
from vetset.recipes.cli import main

STAT = re.compile(r'<div class="stat" data-key="([^"]+)"><div class="value">([^<]*)</div>')
AUDIT_SECTIONS = ["sec-balance", "sec-coverage", "sec-quality", "sec-duplicates", "sec-unreadable"]


def _fresh(name):
    """Drop a dataset left by an earlier session (FiftyOne attaches to any running database service)."""
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    return name


def _run(hooks, data, name, out, stages=None, fail_on=None):
    _fresh(name)
    recipe = parse_recipe({"name": "acme", "stages": stages or {"class_stats": {}, "report": {"max_thumbnails": 12}},
                           "fail_on": fail_on or {}}, hooks.stages)
    run = Run(recipe, hooks, data=data, dataset=name, out_dir=out, log=lambda m: None)
    return run, run.execute()


@pytest.fixture(scope="module")
def hym_run(hymenoptera_dir, tmp_path_factory):
    """Real audit + a third-party stage + report on the 398 hymenoptera photos (shared with the browser test)."""
    return audit_run(hymenoptera_dir, tmp_path_factory)


def _section(html, anchor):
    return re.search(rf'<section class="card[^"]*" id="{anchor}".*?</section>', html, re.S).group(0)


def test_report_assembles_every_section_and_survives_a_broken_one(hym_run):
    run, result, plugin, _ = hym_run
    block = result["stages"]["report"]
    html = open(block["report_html"], encoding="utf-8").read()
    status = {s["name"]: (s["status"], s["plugin"]) for s in block["sections"]}
    assert status["overview"] == ("ok", "vetset.plugins.report.stage")
    assert status["class_stats"] == ("ok", PLUGIN_NAME)
    assert status["acme_broken"] == ("error", PLUGIN_NAME)
    assert status["actions"] == ("ok", "vetset.plugins.report.stage")
    assert {status[a[4:]][0] for a in AUDIT_SECTIONS} == {"ok"}
    # order keys: overview 0, balance 10, acme 15 and 16, coverage 20 ... unreadable 50, actions 1000
    heads = re.findall(r'<section class="card[^"]*" id="([^"]+)"', html)
    assert heads == ["sec-overview", "sec-balance", "sec-class_stats", "sec-acme_broken", *AUDIT_SECTIONS[1:],
                     "sec-actions"]
    broken = _section(html, "sec-acme_broken")
    assert "error-box" in broken and PLUGIN_NAME in broken and "RuntimeError: acme section exploded" in broken
    assert block["metrics"]["section_errors"] == 1
    # self-contained: no external scripts, styles, images or frames; plotly.js inlined once
    assert not re.search(r'<(script|img|link|iframe|source)[^>]+(src|href)="(?!data:|#)', html)
    assert html.count('id="plotly-js-gz"') == 1 and "application/x-vetset-plot" in html
    assert "cdn.plot.ly" not in html
    for anchor in heads:  # the table of contents links every shown section
        assert f'href="#{anchor}"' in html
    assert plugin.runs == 1
    md = open(block["report_md"], encoding="utf-8").read()
    assert md.startswith("# Dataset audit: t-report-hym") and "`leakage_groups`" in md


def test_result_json_validates_and_schema_catches_breakage(hym_run):
    run, result, _, _ = hym_run
    stored = read_result(run.out_dir)
    validate_result(stored)
    assert schema_errors(stored) == []
    assert stored["stages"]["report"] == result["stages"]["report"]  # the final redraw was saved
    broken = copy.deepcopy(stored)
    broken["stages"]["class_stats"]["metrics"]["smallest_class"] = "few"
    broken["surprise"] = 1
    del broken["finished_at"]
    errors = schema_errors(broken)
    assert any(e.startswith("stages.class_stats.metrics.smallest_class:") for e in errors)
    assert any("surprise" in e for e in errors) and any("finished_at" in e for e in errors)
    with pytest.raises(ResultSchemaError, match="does not match the result schema"):
        validate_result(broken)
    old = dict(stored, schema_version=0)
    with pytest.raises(ResultSchemaError, match="schema_version 0"):
        validate_result(old)


def _as_version_1(result):
    """``result`` in the layout schema version 1 had (docs/result-schema.md): audit options with
    ``checks`` a list of names, built-in checks' options at the top, plugin checks' under
    ``plugin_options``."""
    from vetset.plugins.audit.stage import LEGACY_CHECK_KEYS

    def down(options):
        out = {k: v for k, v in options.items() if k not in ("select", "checks")}
        out["checks"] = options["select"]
        out.update({k: v for k, v in options["checks"].items() if k in LEGACY_CHECK_KEYS})
        out["plugin_options"] = {k: v for k, v in options["checks"].items() if k not in LEGACY_CHECK_KEYS}
        return out

    old = copy.deepcopy(result)
    old["schema_version"] = 1
    old["recipe"]["stages"]["audit"] = down(old["recipe"]["stages"]["audit"])
    old["stages"]["audit"]["options"] = down(old["stages"]["audit"]["options"])
    return old


def test_a_version_1_result_is_read_as_version_2(hym_run, tmp_path):
    """Break-it: `recipes report` refused every result.json written before the check-as-a-unit
    layout (schema 1), though only the audit options moved."""
    run, _, _, _ = hym_run
    stored = read_result(run.out_dir)
    old = _as_version_1(stored)
    assert old["stages"]["audit"]["options"] != stored["stages"]["audit"]["options"]
    (tmp_path / "result.json").write_text(json.dumps(old), encoding="utf-8")
    again = read_result(tmp_path)
    assert again == stored
    validate_result(again)
    with pytest.raises(ResultSchemaError, match=r"schema_version 3; this vetset reads versions 1 to 2 .*rerun the "
                                                r"recipe to write it again\.$"):
        validate_result(dict(stored, schema_version=3), "r.json")


def test_numbers_in_html_match_result_and_fiftyone(hym_run):
    run, result, _, _ = hym_run
    html = open(result["stages"]["report"]["report_html"], encoding="utf-8").read()
    # every headline number that names its source shows that value of result.json
    cards = STAT.findall(html)
    keys = {k for k, _ in cards}
    assert {"load.num_samples", "load.unreadable", "duration_s", "audit.metrics.classes_below_min",
            "audit.metrics.leakage_groups", "audit.metrics.unreadable"} <= keys
    for key, shown in cards:
        assert shown == fmt(resolve_key(result, key)), key
    ds = run.dataset
    assert result["load"]["num_samples"] == len(ds) == 398
    readable = ds.match_tags("unreadable", bool=False)
    audit = result["stages"]["audit"]
    # the audit's class counts, shown in the balance table, are FiftyOne's counts per split tag
    balance = _section(html, "sec-balance")
    rows = {r[0]: [int(x.replace(",", "")) for x in r[1:]]
            for r in (re.findall(r"<td[^>]*>([^<]*)</td>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", balance)) if r}
    for i, split in enumerate(("train", "val")):
        fo_counts = readable.match_tags(split).count_values("ground_truth.label")
        assert audit["class_counts"][split] == {c: fo_counts[c] for c in ("ants", "bees")}
        assert {c: v[i] for c, v in rows.items()} == audit["class_counts"][split]
    # coverage cells: the stored counts equal FiftyOne's orientation field on the train split
    train = readable.match_tags("train")
    for cls in ("ants", "bees"):
        fo_orient = train.match({"ground_truth.label": cls}).count_values("orientation")
        stored = audit["coverage"]["train"]["orientation"][cls]
        assert {b: n for b, n in stored.items() if n} == dict(fo_orient)
    # the third-party table holds the per-class counts FiftyOne gives for each split
    acme = _section(html, "sec-class_stats")
    rows = {r[0]: [int(x.replace(",", "")) for x in r[1:]]
            for r in (re.findall(r"<td[^>]*>([^<]*)</td>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", acme)) if r}
    assert {c: v[0] for c, v in rows.items()} == audit["class_counts"]["train"]
    # overview split totals come from the loader's counts = FiftyOne's split tags
    for split in ("train", "val"):
        assert f"<td>{split}</td><td class=\"num\">{fmt(len(ds.match_tags(split)))}</td>" in html
    # the action list quotes the metric it comes from with its stored value
    for action in result["stages"]["report"]["actions"]:
        assert lookup(result, action["metric"]) == action["value"] or action["metric"].startswith("load.")
        assert f'data-action="{action["id"]}"' in html


def test_thumbnails_are_capped_and_small(hym_run):
    _, result, _, _ = hym_run
    block = result["stages"]["report"]
    html = open(block["report_html"], encoding="utf-8").read()
    thumbs = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', html)
    assert len(thumbs) == block["thumbnails"]
    acme = _section(html, "sec-class_stats")
    assert acme.count('src="data:image/jpeg') == 12  # max_thumbnails of the recipe, of 398 images
    assert "Showing 12 of 398" in acme and "<code>acme/all</code>" in acme
    assert max(len(t) for t in thumbs) * 3 / 4 < 8_000  # 96 px JPEGs of real photos: a few kB each


def test_report_size_does_not_grow_with_samples(digits_dir, tmp_path):
    """1,797 samples all offered as thumbnails: the page stays at plotly.js + capped thumbnails."""
    hooks = make_hooks(ClassStatsPlugin(broken=False))
    _, result = _run(hooks, digits_dir, "t-report-digits", tmp_path / "out",
                     stages={"class_stats": {}, "report": {}})
    block = result["stages"]["report"]
    assert len(result["stages"]["class_stats"]["examples"]) == 1797
    assert block["thumbnails"] == 24
    from vetset.plugins.report.page import plotly_js_gzip_b64

    non_plotly = block["size_bytes"] - len(plotly_js_gzip_b64())
    assert non_plotly < 200_000, non_plotly  # sections + 24 thumbnails
    assert block["size_bytes"] < 2_500_000


def test_recipes_report_rebuilds_without_recomputing(hym_run, tmp_path, monkeypatch, capsys):
    run, result, plugin, hooks = hym_run
    monkeypatch.setattr(manager, "_default", hooks)
    runs_before = plugin.runs
    stored_before = (run.out_dir / "result.json").read_bytes()
    out = tmp_path / "to-share"
    assert main(["report", "--dataset", run.dataset.name, "--out", str(out)]) == 0
    assert plugin.runs == runs_before  # nothing recomputed
    assert (run.out_dir / "result.json").read_bytes() == stored_before  # stored result only read
    assert json.loads((out / "result.json").read_text()) == json.loads(stored_before)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert SECTION_TITLE in html and BROKEN_TITLE in html
    assert dict(STAT.findall(html))["load.num_samples"] == "398"
    assert str(out / "report.html") in capsys.readouterr().out


def test_recipes_report_errors_are_one_sentence(hym_run, tmp_path, monkeypatch, capsys):
    _, _, _, hooks = hym_run
    monkeypatch.setattr(manager, "_default", hooks)
    assert main(["report", "--dataset", "t-no-such-dataset"]) == 2
    assert "'t-no-such-dataset' does not exist" in capsys.readouterr().err
    import fiftyone as fo

    ds = fo.Dataset(_fresh("t-report-never-run"))
    try:
        assert main(["report", "--dataset", ds.name]) == 2
        err = capsys.readouterr().err
        assert "has no stored vetset result" in err and "recipes run audit --dataset t-report-never-run" in err
        ds.info = {"vetset": {"out_dir": str(tmp_path / "gone")}}
        ds.save()
        assert main(["report", "--dataset", ds.name]) == 2
        assert "result.json does not exist" in capsys.readouterr().err
    finally:
        ds.delete()


def test_fail_on_exits_1_and_lists_what_failed(hymenoptera_dir, tmp_path, monkeypatch, capsys):
    """The issue's gates on a real audit: leakage > 0, label issues > 2 %, any class below 200 images."""
    plugin = ClassStatsPlugin(broken=False)
    monkeypatch.setattr(manager, "_default", make_hooks(plugin, builtins=AUDIT_BUILTINS))
    recipe = tmp_path / "gate.yaml"
    stages = "name: gate\nstages:\n  audit: {}\n  class_stats: {}\n  report: {}\nfail_on:\n"
    recipe.write_text(stages +
                      "  audit.metrics.leakage_groups: 0\n"                    # 0 groups -> passes
                      "  audit.metrics.classes_below_min: 0\n"                 # 121 and 124 < 200 -> fails
                      "  audit.metrics.leakage_group: 0\n"                     # misspelled -> fails, with a hint
                      "  class_stats.metrics.smallest_class_fraction: 0.40\n")  # 121/245 = 0.49 -> fails
    out = tmp_path / "out"
    _fresh("t-report-gate")
    code = main(["run", str(recipe), "--data", str(hymenoptera_dir), "--dataset", "t-report-gate", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    listed = [line.strip() for line in err.splitlines() if line.strip().startswith("- ")]
    assert listed == ["- audit.metrics.classes_below_min = 2 exceeds 0",
                      "- audit.metrics.leakage_group was not computed by this run; did you mean audit.metrics.leakage_groups?",
                      "- class_stats.metrics.smallest_class_fraction = 0.493878 exceeds 0.4"]
    stored = read_result(out)
    validate_result(stored)
    assert stored["fail_on"]["checked"]["audit.metrics.leakage_groups"] == {"value": 0, "threshold": 0.0, "failed": False}
    assert stored["stages"]["audit"]["metrics"]["classes_below_min"] == 2
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "fail_on: 3 of 4 gates failed" in html and html.count('<span class="badge fail">failed</span>') == 3
    assert "- :x: audit.metrics.classes_below_min = 2 exceeds 0" in (out / "report.md").read_text()
    # the same run resumed with gates it passes exits 0 without recomputing the stages
    recipe.write_text(stages + "  audit.metrics.leakage_groups: 0\n  class_stats.metrics.smallest_class_fraction: 0.5\n")
    assert main(["run", str(recipe), "--dataset", "t-report-gate", "--out", str(out), "--resume"]) == 0
    assert plugin.runs == 1
    assert "fail_on: all 2 gates passed" in (out / "report.html").read_text(encoding="utf-8")


def test_actions_ranked_by_impact_and_defensive(hym_run):
    _, result, _, _ = hym_run
    # the real audit: both classes have fewer than the default 200 train images (124 ants, 121 bees)
    (small,) = recommended_actions(result)
    assert (small.id, small.value, small.share, small.share_of) == ("classes_below_min", 2, 1.0, "classes")
    assert "bees (121), ants (124)" in small.title and "200 train images" in small.title
    assert result["stages"]["report"]["actions"] == [small.to_dict()]
    # the same result with more problems: evaluation-breaking first, then by share within a severity
    res = copy.deepcopy(result)
    n = res["stages"]["audit"]["num_images"]
    res["stages"]["audit"]["metrics"].update(unreadable=4, leakage_groups=3, leakage_samples=6,
                                             leakage_fraction=round(6 / n, 4), coverage_gaps=2)
    res["stages"]["label_noise"] = {"metrics": {"label_issues": 40, "label_issue_rate": 0.1}}
    res["stages"]["validate"] = {"gap": {"verdict": "overfitting"}, "metrics": "not a dict"}
    actions = recommended_actions(res)
    # medium: classes 2 of 2 (1.0) > label issues 0.1 > overfitting (share unknown); low: unreadable 4/398 > gaps
    assert [a.id for a in actions] == ["leakage", "classes_below_min", "label_issues", "overfitting", "unreadable",
                                      "coverage_gaps"]
    leak = actions[0]
    assert leak.value == 3 and leak.share == pytest.approx(6 / n, abs=1e-4) and lookup(res, leak.metric) == 3
    # stages that did not run, or blocks of an unexpected shape, give no action and no error
    assert recommended_actions({"stages": {"audit": {"metrics": None}, "validate": "odd"}}) == []
