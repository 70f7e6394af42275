"""Training on several processes: the torchrun launcher of the train stage and its entry point.

With ``stages.train.nproc`` > 1 (or ``recipes run ... --nproc N``) the train stage calls
:func:`launch_fit`, which writes a spec file and runs::

    python -m torch.distributed.run --standalone --nproc_per_node=N \\
        -m vetset.plugins.train.ddp <out>/train/ddp_spec.json

Every rank runs :func:`vetset.plugins.train.loop.fit` with the same arguments and trains
with DistributedDataParallel (:mod:`vetset.plugins.train.distributed`). The run's own process (the
driver) keeps everything FiftyOne-related: no rank opens the dataset; the spec holds the
``(filepath, class_index)`` items, classes and options. Rank 0 writes ``best.pt``,
``last.pt``, the history files and ``ddp_fit.json`` (the fit result), which the driver
reads back, so the train result block is the same as with one process.

Files in the stage folder::

    ddp_spec.json          what the ranks train on (items, classes, options, resume, recipe)
    ddp_fit.json           rank 0's fit result: history, best epoch, data config, device...
    ddp.log                everything torchrun and the ranks printed
    ddp_error.rank<R>.json the exception of a failing rank (type, message)

Failures: when a rank raises, torchrun stops the others (its own failure handling) and
the driver raises one error naming the stage, the rank and ``ddp.log`` (the rank's
:class:`~vetset.core.errors.VetsetError` class is kept, so a bad image is still a
``DataError``). A rank that stops answering makes the others fail after
:data:`vetset.plugins.train.distributed.COLLECTIVE_TIMEOUT`; ``timeout_s`` bounds the whole launch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vetset.core import errors as verrors
from vetset.core.atomic import atomic_write
from vetset.core.errors import RecipeError, VetsetError
from vetset.core.result import to_jsonable

SPEC, RESULT, LOG = "ddp_spec.json", "ddp_fit.json", "ddp.log"
ERROR_GLOB = "ddp_error.rank*.json"


def check_nproc(options: Any) -> None:
    """Check that this machine can run ``options.nproc`` training processes.

    Raises:
        RecipeError: ``device: mps`` with ``nproc`` > 1, CUDA asked for but absent, or more
            processes than CUDA devices when training on CUDA (see
            :func:`vetset.plugins.train.distributed.ddp_device`).
    """
    if options.nproc <= 1:
        return
    import torch

    from vetset.plugins.train.distributed import ddp_device

    mps = getattr(torch.backends, "mps", None)
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    ddp_device(options.device, options.nproc - 1, cuda, bool(mps is not None and mps.is_available()))
    cpus = os.cpu_count() or 1
    if (not cuda or options.device == "cpu") and options.nproc > cpus:
        raise RecipeError(f"nproc {options.nproc} asks for more CPU training processes than this machine has CPUs "
                          f"({cpus}); use at most {cpus}.")


def with_nproc(recipe: Any, nproc: int, stages: Any) -> Any:
    """A copy of ``recipe`` with ``stages.train.nproc`` set (``recipes run --nproc N``).

    Args:
        recipe: a validated :class:`vetset.core.recipe.Recipe`.
        nproc: number of training processes, >= 1.
        stages: the stage registry (``hooks.stages``) to validate against.

    Raises:
        RecipeError: the recipe has no train stage.
    """
    from vetset.core.recipe import parse_recipe

    if "train" not in recipe.stages:
        raise RecipeError(f"--nproc sets the train stage's processes, but recipe {recipe.name!r} has no train stage "
                          f"(stages: {', '.join(recipe.stage_names())}).")
    data = recipe.model_dump()
    data["stages"] = dict(data["stages"])
    data["stages"]["train"] = {**(data["stages"]["train"] or {}), "nproc": int(nproc)}
    return parse_recipe(data, stages, source=recipe.source)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, default=to_jsonable))


def _thread_env(nproc: int, threads: int | None) -> dict[str, str]:
    """Environment of the torchrun process: unbuffered output, no progress bars, CPU threads per rank."""
    from vetset.core.executor import default_workers

    env = dict(os.environ, PYTHONUNBUFFERED="1", VETSET_PROGRESS="0")
    if "OMP_NUM_THREADS" not in os.environ:  # torchrun would set 1; share the CPUs instead
        env["OMP_NUM_THREADS"] = str(threads or max(1, default_workers() // nproc))
    return env


def _pump(stream: Any, log_file: Any, log: Callable[[str], Any]) -> None:
    """Copy the ranks' output to ``ddp.log``; pass rank 0's ``[train]`` lines to ``log``."""
    for line in stream:
        log_file.write(line)
        log_file.flush()
        if line.startswith("[train]"):
            log(line.rstrip("\n"))


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to torchrun (it stops its workers), then SIGKILL to its whole process group."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:  # pragma: no cover - already gone
            pass
        proc.wait()


def _failure(out: Path, nproc: int, code: int, log_path: Path) -> VetsetError:
    """The error to raise for a failed launch: the failing rank's own error when it left one."""
    reports = []
    for f in out.glob(ERROR_GLOB):
        try:
            reports.append(json.loads(f.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    # a rank's own VetsetError first (bad data or option), then the earliest failure
    reports.sort(key=lambda r: (not r.get("vetset"), r.get("time", 0.0)))
    where = f"stage 'train', rank {{rank}} of {nproc}; log: {log_path}"
    if reports:
        rep = reports[0]
        cls = getattr(verrors, str(rep.get("type")), None)
        if rep.get("vetset") and isinstance(cls, type) and issubclass(cls, VetsetError):
            return cls(f"{rep['message']} ({where.format(rank=rep['rank'])})")
        return VetsetError(f"Stage 'train': training process rank {rep['rank']} of {nproc} failed with "
                           f"{rep['type']}: {rep['message']}; log: {log_path}")
    return VetsetError(f"Stage 'train': torchrun with {nproc} processes exited with code {code}; log: {log_path}")


def launch_fit(train_items: Sequence[tuple[str, int]], val_items: Sequence[tuple[str, int]], classes: Sequence[str],
               options: Any, out_dir: str | Path, log: Callable[[str], Any] = print, resume: bool = False,
               recipe: dict[str, Any] | None = None, timeout_s: float | None = None) -> Any:
    """:func:`vetset.plugins.train.loop.fit` on ``options.nproc`` processes under torchrun.

    Args:
        train_items, val_items, classes, resume, recipe: as for ``fit``.
        options: :class:`TrainOptions` or mapping; ``nproc`` processes (>= 2 to be useful).
        out_dir: the stage folder (needed: the ranks hand back results through files).
        log: one-line status callback; gets rank 0's ``[train]`` lines as they come.
        timeout_s: stop torchrun and raise after this many seconds; ``None`` = no limit.

    Returns:
        A :class:`vetset.plugins.train.loop.FitOutput`; its ``model`` is rebuilt on CPU from
        the best checkpoint (``weights_only=True``).

    Raises:
        RecipeError: the machine cannot run ``nproc`` processes (see :func:`check_nproc`),
            or an option is invalid.
        DataError: a rank could not read an image (message names it, the rank and the log).
        VetsetError: a rank failed otherwise, torchrun failed, or ``timeout_s`` passed.
    """
    from vetset.plugins.train.checkpoint import model_from_checkpoint
    from vetset.plugins.train.loop import FitOutput
    from vetset.plugins.train.options import as_options, load_train_transform

    opts = as_options(options)
    check_nproc(opts)
    if len(train_items) < 2 * opts.nproc:  # BatchNorm needs 2+ images per batch on every process
        raise RecipeError(f"nproc {opts.nproc} needs at least {2 * opts.nproc} readable train images (2 per process); "
                          f"the train split has {len(train_items)}: use fewer processes.")
    load_train_transform(opts.train_transform)  # a bad option fails here, not once per rank
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in [out / RESULT, *out.glob(ERROR_GLOB)]:
        stale.unlink(missing_ok=True)
    spec = {"train_items": [[str(p), int(c)] for p, c in train_items],
            "val_items": [[str(p), int(c)] for p, c in val_items], "classes": [str(c) for c in classes],
            "options": opts.model_dump(mode="json"), "out_dir": str(out), "resume": bool(resume), "recipe": recipe}
    _write_json(out / SPEC, spec)
    log_path = out / LOG
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={opts.nproc}",
           "-m", "vetset.plugins.train.ddp", str(out / SPEC)]
    log(f"[train] torchrun: {opts.nproc} processes; output in {log_path}")
    with open(log_path, "w", encoding="utf-8") as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env=_thread_env(opts.nproc, opts.threads), start_new_session=True)
        pump = threading.Thread(target=_pump, args=(proc.stdout, log_file, log), daemon=True)
        pump.start()
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            pump.join(timeout=10)
            raise VetsetError(f"Stage 'train': training on {opts.nproc} processes did not finish within "
                              f"{timeout_s:.0f} s and was stopped; log: {log_path}") from None
        except BaseException:  # KeyboardInterrupt: stop the ranks, keep last.pt for --resume
            _stop(proc)
            raise
        pump.join(timeout=10)
    if code != 0 or not (out / RESULT).is_file():
        raise _failure(out, opts.nproc, code, log_path)
    res = json.loads((out / RESULT).read_text(encoding="utf-8"))
    ckpt = res.get("best_checkpoint") or res.get("last_checkpoint")
    return FitOutput(
        model=model_from_checkpoint(ckpt, "cpu") if ckpt else None, history=res["history"],
        data_config=res["data_config"], best_checkpoint=res.get("best_checkpoint"),
        last_checkpoint=res.get("last_checkpoint"), best_epoch=int(res["best_epoch"]), device=res["device"],
        amp_dtype=res.get("amp_dtype"), stopped_early=bool(res.get("stopped_early")),
        resumed_from=res.get("resumed_from"), classes=list(res["classes"]), weights=res.get("weights") or {},
        finetune=res.get("finetune") or {})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of one torchrun rank: ``python -m vetset.plugins.train.ddp <spec.json>``.

    Trains with :func:`vetset.plugins.train.loop.fit`; rank 0 writes ``ddp_fit.json``. A
    failing rank writes ``ddp_error.rank<R>.json`` and re-raises (torchrun then stops the
    other ranks and exits non-zero).
    """
    from vetset.plugins.train.distributed import rank_from_env, shutdown

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m torch.distributed.run --nproc_per_node=N -m vetset.plugins.train.ddp SPEC.json",
              file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    out = Path(spec["out_dir"])
    rank = rank_from_env()
    try:
        from vetset.plugins.train.loop import fit

        res = fit([tuple(i) for i in spec["train_items"]], [tuple(i) for i in spec["val_items"]], spec["classes"],
                  spec["options"], out_dir=out, log=lambda m: print(m, flush=True), resume=spec["resume"],
                  recipe=spec["recipe"])
        if rank == 0:
            _write_json(out / RESULT, {
                "history": res.history, "data_config": res.data_config, "best_checkpoint": res.best_checkpoint,
                "last_checkpoint": res.last_checkpoint, "best_epoch": res.best_epoch, "device": res.device,
                "amp_dtype": res.amp_dtype, "stopped_early": res.stopped_early, "resumed_from": res.resumed_from,
                "classes": res.classes, "weights": res.weights, "finetune": res.finetune})
    except BaseException as exc:
        _write_json(out / f"ddp_error.rank{rank}.json", {
            "rank": rank, "type": type(exc).__name__, "message": str(exc), "vetset": isinstance(exc, VetsetError),
            "time": time.time()})
        raise
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
