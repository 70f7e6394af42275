"""Sentences about failure-slice rows, shared by the validate stage's log and the console summary.

No imports beyond the standard library: the CLI imports it at start (``recipes`` latency).
"""

from __future__ import annotations

from typing import Any


def coverage_text(row: dict[str, Any]) -> str:
    """``"; train: 0 images of class frog in this bin (0%), not covered"``: a slice row's train coverage
    for a one-line message (:mod:`vetset.plugins.validate.slices`: ``train_n``,
    ``train_share``, ``uncovered``); ``""`` without a train share (derived properties, no
    train split, results written before train shares existed)."""
    if row.get("train_share") is None:
        return ""
    whose = f"images of class {row['class']}" if row.get("class") is not None else "images"  # class 9: not "9 images"
    return (f"; train: {row['train_n']} {whose} in this bin ({row['train_share']:.0%})"
            + (", not covered" if row.get("uncovered") else ""))
