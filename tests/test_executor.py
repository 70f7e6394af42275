"""The local executor: ordered results, the parent's help while workers start, prestart."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from vetset.core import executor as ex


class _SlowStartPool:
    """A pool whose first ``submit`` blocks, as a forkserver's does while it imports its
    preload modules; it runs each submitted chunk at once, in the calling thread."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.submitted: list[tuple] = []

    def submit(self, fn, *args):
        if not self.submitted:
            assert self.started.wait(10), "the parent never let the pool start"
        self.submitted.append(args[1])
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future


def _chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(n, i + size))) for i in range(0, n, size)]


def test_the_parent_runs_chunks_from_the_back_until_the_pool_accepts_work():
    pool = _SlowStartPool()
    here: list[int] = []
    main = threading.current_thread()

    def square(x: int) -> int:
        if threading.current_thread() is main:
            here.append(x)
            if len(here) == 9:  # three chunks of 3 done here: the "workers" come up
                pool.started.set()
                feeds[0]._accepting.wait(10)  # no race with the feeding thread's first submit
        return x * x

    feeds: list = []
    feeds.append(ex._Feed(pool, square, _chunks(30, 3)))
    feed = feeds[0]
    local = feed.help_while_starting()
    results = [r for i, f in enumerate(feed.futures) for r in (local[i][1] if i in local else f.result())]

    assert results == [x * x for x in range(30)]
    assert sorted(local) == [7, 8, 9]  # taken from the back
    assert here == [27, 28, 29, 24, 25, 26, 21, 22, 23]
    assert [c[0] for c in pool.submitted] == [0, 3, 6, 9, 12, 15, 18]  # the front, in order, nothing twice


def test_a_chunk_that_failed_in_the_parent_raises_at_its_turn(monkeypatch):
    pool = _SlowStartPool()
    pool.shutdown = lambda wait=True, cancel_futures=False: None
    monkeypatch.setattr(ex.LocalExecutor, "_new_pool", lambda self: pool)
    main = threading.current_thread()

    def fn(x: int) -> int:
        if threading.current_thread() is main:
            pool.started.set()
            if x == 9:
                raise ValueError("bad item 9")
        return x

    got = []
    with pytest.raises(ValueError, match="bad item 9"):
        for value in ex.LocalExecutor(2).map(fn, list(range(10)), chunksize=2):
            got.append(value)
    assert got == list(range(8))  # every chunk before the failed one was yielded


def test_local_map_keeps_order_and_raises_a_worker_error_in_order():
    executor = ex.LocalExecutor(2)
    assert list(executor.map(abs, list(range(-50, 50)), chunksize=7)) == [abs(x) for x in range(-50, 50)]
    got = []
    with pytest.raises(TypeError):
        for value in ex.LocalExecutor(2).map(abs, [-1, -2, "x", -4], chunksize=1):
            got.append(value)
    assert got == [1, 2]


def test_prestart_only_for_local_workers(monkeypatch):
    started = []
    monkeypatch.setattr(ex, "_PRESTARTED", False)
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self.name))
    monkeypatch.setattr(ex.mp.get_context("forkserver"), "set_forkserver_preload", lambda mods: None)
    with ex.use_executor({"name": "local", "workers": 1}):
        assert ex.prestart(["numpy"]) is False
    with ex.use_executor({"name": "ray"}):
        assert ex.prestart(["numpy"]) is False
    with ex.use_executor({"name": "local", "workers": 2}):
        assert ex.prestart([]) is False
        assert ex.prestart(["numpy"]) is True
        assert ex.prestart(["numpy"]) is False  # one forkserver per process
    assert started == ["vetset-forkserver-start"]


def test_a_run_prestarts_the_workers_of_its_stages(monkeypatch, digits_dir, fresh_name, tmp_path, hooks):
    from vetset.core import run as run_mod
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    asked = []
    monkeypatch.setattr(run_mod, "prestart", lambda modules: asked.append(list(modules)))
    recipe = parse_recipe({"name": "t", "stages": {"audit": {"workers": 0}}}, hooks.stages)
    Run(recipe, hooks, data=digits_dir, dataset=fresh_name, out_dir=tmp_path, log=lambda m: None).execute()
    assert asked == [list(hooks.stages["audit"].worker_modules)]
    assert "imagehash" in asked[0] and "vetset.plugins.audit.checks.coverage" in asked[0]


def _stamp_start(folder: str, x: int) -> int:
    """Write the time item ``x`` started into ``folder/x``, then take 20 ms."""
    import os
    import time

    with open(os.path.join(folder, str(x)), "w") as fh:
        fh.write(repr(time.time()))
    time.sleep(0.02)
    return x


def test_an_abandoned_map_cancels_the_chunks_no_worker_started(monkeypatch, tmp_path):
    """Closing the generator early (Ctrl-C, an error in the consumer) cancels every chunk not
    started, at once. ``shutdown(cancel_futures=True)`` alone left that to the pool's manager
    thread, which skips it when the pool object is already gone; about half the time every
    remaining chunk still ran (and an interpreter's exit waited for them)."""
    import functools
    import time

    feeds: list = []

    class Recording(ex._Feed):
        def __init__(self, *args):
            super().__init__(*args)
            feeds.append(self)

    monkeypatch.setattr(ex, "_Feed", Recording)
    gen = ex.LocalExecutor(2).map(functools.partial(_stamp_start, str(tmp_path)), list(range(150)), chunksize=1)
    assert next(gen) == 0
    gen.close()
    closed = time.time()
    futures = [f for f in feeds[0].futures if f is not None]
    assert futures and not [f for f in futures if not (f.cancelled() or f.running() or f.done())]
    assert sum(f.cancelled() for f in futures) >= len(futures) - 10  # 20 ms each: most had not started
    del gen, feeds[:], futures  # the pool goes too: nothing may start after this
    time.sleep(0.6)
    started_after = [p.name for p in tmp_path.iterdir() if float(p.read_text()) > closed + 0.05]
    assert len(started_after) <= 3, started_after  # at most what sat in the pool's call queue
