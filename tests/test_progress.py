"""Progress bars: the rate a bar shows, and a finished bar's average."""

from __future__ import annotations

import io
import re

from vetset.core import progress


def test_rate_text_never_shows_zero_per_second():
    assert progress.rate_text(1234.4, "img") == "1,234 img/s"
    assert progress.rate_text(3.44, "batch") == "3.4 batch/s"
    assert progress.rate_text(0.4, "batch") == "2.5 s/batch"
    assert progress.rate_text(0.01, "fold") == "100.0 s/fold"
    assert progress.rate_text(None, "img") == progress.rate_text(0.0, "img") == "- img/s"


def test_a_finished_bar_shows_the_average_rate(monkeypatch):
    """A loop of two slow items ends showing their average (0.5 s each: 2.0 item/s), not rich's
    windowed speed (which rounds to '0 batch/s' for slow loops or is unknown for one item)."""
    import time

    from rich.console import Console

    monkeypatch.setenv("VETSET_PROGRESS", "1")
    out = io.StringIO()
    monkeypatch.setattr("rich.progress.get_console", lambda: Console(file=out, width=120, force_terminal=False))
    for _ in progress.track(range(2), total=2, description="slow", unit="batch"):
        time.sleep(0.5)
    last = out.getvalue().strip().splitlines()[-1]
    rate = re.search(r"(\d+\.\d) batch/s", last)
    assert "2/2" in last and rate is not None and 1.0 <= float(rate.group(1)) <= 2.0, last


def test_no_bar_for_nothing_to_do(monkeypatch):
    """An audit that reused every image passes an empty list: no '0/0 0%' bar is drawn."""
    from rich.console import Console

    monkeypatch.setenv("VETSET_PROGRESS", "1")
    out = io.StringIO()
    monkeypatch.setattr("rich.progress.get_console", lambda: Console(file=out, width=120, force_terminal=False))
    assert list(progress.track([], total=0, description="audit")) == []
    assert out.getvalue() == ""
    assert list(progress.track([1], total=1, description="audit")) == [1]
    assert "1/1" in out.getvalue()
