"""The ``recipes`` command: list, show, validate and run recipes; demo data; plugins.

Exit codes: 0 ok; 1 the run finished but a ``fail_on`` threshold was exceeded; 2 a usage
or input error (bad option, bad recipe, unusable data), reported as one sentence.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from vetset.core.database import current_lease, ensure_server
from vetset.core.errors import ChecksFailed, DataError, VetsetError
from vetset.plugins.report.console import diagnosis_lines

app = typer.Typer(
    name="recipes",
    help="vetset: audit, augment, train and validate image-classification datasets with YAML recipes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# piped or redirected: log lines stay whole and tables get room (rich would use 80 columns)
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)


#: Set by ``recipes run`` once it has started: a run starts no process that should outlive
#: it (the App's commands do: FiftyOne's server and services are stopped by their own exit
#: handlers, so those commands exit the ordinary way).
_fast_exit = [False]


def _hooks():
    from vetset.core.manager import get_hooks

    return get_hooks()


def _check_train(check_options, recipe) -> None:
    """The train stage's checks beyond the schema (timm model name, optimizer...), their
    error naming the recipe file as the schema's errors do."""
    from vetset.core.errors import RecipeError

    try:
        check_options(recipe.options("train"))
    except RecipeError as exc:
        raise RecipeError(f"{recipe.source}: {exc}") from None


def _check_inputs(data: Path | None, dataset: str | None, out: Path | None = None) -> None:
    """What can be refused before the database starts: a dataset name FiftyOne would mangle,
    a --data path that does not exist, an --out folder inside the data folder where the
    loader would read it as a class (only hidden folders and ``vetset-runs`` are left out)."""
    from vetset.core.dataset import check_dataset_name, left_out_folder  # numpy and Pillow: not for --help

    if dataset is not None and data is not None:
        check_dataset_name(dataset)
    if data is not None and not data.expanduser().exists():
        raise DataError(f"Manifest {data} does not exist." if data.suffix.lower() == ".csv"
                        else f"Data folder {data} does not exist.")
    if data is not None and out is not None and data.expanduser().is_dir():
        root, target = data.expanduser().resolve(), out.expanduser().resolve()
        if target.is_relative_to(root) and not any(left_out_folder(p) for p in target.relative_to(root).parts):
            raise DataError(f"--out {out} is inside the data folder {data}, whose folders are read as classes; "
                            "choose an output folder outside it (or under its vetset-runs/ folder).")


def _database(preload: bool = True) -> None:
    """Point FiftyOne at the shared database server before fiftyone is imported (starting
    the server in the background when none runs: see :mod:`vetset.core.database`), import
    fiftyone (without what it imports only to draw plots:
    :func:`vetset.core._fiftyone.import_fiftyone`) while ``mongod`` starts, then wait until
    it accepts connections."""
    lease = ensure_server(wait=False)
    if preload:  # the imports overlap mongod's start when it was not running
        from vetset.core._fiftyone import import_fiftyone

        import_fiftyone()
    if lease is not None:
        lease.wait()


@app.command("list")
def list_recipes() -> None:
    """List the recipes that plugins registered (bundled ones included)."""
    from vetset.core.manager import RECIPE_PLUGINS, Hooks, build_plugin_manager
    from vetset.core.recipe import read_yaml

    # Only the plugins that can register recipes are imported (the bundled recipes and the
    # entry-point plugins), not the built-in stages (numpy, pandas...): the rows are read
    # from each YAML file as written; `recipes show NAME` / `validate` check one fully.
    hooks = Hooks(build_plugin_manager(builtins=RECIPE_PLUGINS))
    table = Table("recipe", "stages", "description", "plugin")
    for name in hooks.recipes:
        data = read_yaml(Path(hooks.recipes[name]))
        data = data if isinstance(data, dict) else {}
        stages = data.get("stages") if isinstance(data.get("stages"), dict) else {}
        table.add_row(name, " → ".join(stages), str(data.get("description") or ""), hooks.recipes.plugin_of(name))
    console.print(table)


@app.command("show")
def show(name: str = typer.Argument(..., help="Recipe name or YAML file.")) -> None:
    """Print a recipe's YAML as written, then its options with defaults filled in."""
    import yaml

    from vetset.core.recipe import load_recipe, resolve_recipe_path

    hooks = _hooks()
    path = resolve_recipe_path(name, hooks.recipes)
    recipe = load_recipe(name, hooks)
    console.print(f"# {path}", style="dim")
    console.print(path.read_text(encoding="utf-8"), markup=False, highlight=False)
    console.print("# with defaults filled in", style="dim")
    dumped = recipe.dump()
    dumped.pop("source", None)
    console.print(yaml.safe_dump(dumped, sort_keys=False, width=1000), markup=False, highlight=False)
    if "label_noise" in recipe.stage_names():  # its fold models' options merge three layers: show the result
        from vetset.plugins.label_noise.folds import fold_options_for_show

        folds = fold_options_for_show(recipe)
        console.print(f"# label_noise, method kfold: {folds['summary']}", style="dim", soft_wrap=True)
        console.print(yaml.safe_dump({"fold_model_train_options": folds["options"]}, sort_keys=False, width=1000),
                      markup=False, highlight=False)


@app.command("validate")
def validate(file: Path = typer.Argument(..., help="Recipe YAML file (or a recipe name).")) -> None:
    """Validate a recipe; exit 2 with the file, key path and what is allowed when invalid."""
    from vetset.core.recipe import load_recipe

    recipe = load_recipe(str(file), _hooks())
    if "train" in recipe.stage_names():  # what `recipes run` checks before any stage: timm model name, optimizer...
        from vetset.plugins.train.stage import check_options

        _check_train(check_options, recipe)
    console.print(f"{recipe.source}: valid recipe {recipe.name!r} with stages {', '.join(recipe.stage_names())}.",
                  markup=False, highlight=False, soft_wrap=True)


@app.command("run")
def run(
    recipe: str = typer.Argument(..., help="Recipe name (see `recipes list`) or YAML file."),
    data: Path | None = typer.Option(None, "--data", help="ImageFolder root or CSV manifest (filepath,label[,split])."),
    dataset: str | None = typer.Option(None, "--dataset", help="FiftyOne dataset name (default: vetset-<folder>)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: ./vetset-runs/<dataset>)."),
    resume: bool = typer.Option(False, "--resume", help="Skip finished stages and continue interrupted training."),
    force: bool = typer.Option(False, "--force",
                               help="Run every stage even when nothing the last run in --out read has changed."),
    nproc: int | None = typer.Option(None, "--nproc", min=1,
                                        help="Train on N processes (torchrun, DistributedDataParallel; one per GPU); "
                                             "overrides stages.train.nproc."),
    executor: str | None = typer.Option(None, "--executor",
                                           help="Where per-image work runs: local (worker processes) or ray; "
                                                "overrides the recipe's executor.name."),
    address: str | None = typer.Option(None, "--address",
                                          help="Ray cluster for --executor ray: auto, host:port or ray://host:10001 "
                                               "(default: start a local Ray instance)."),
) -> None:
    """Run a recipe on a folder, a manifest or an existing FiftyOne dataset."""
    from vetset.core.recipe import load_recipe
    from vetset.core.run import Run

    if data is None and dataset is None:
        raise VetsetError("Pass --data PATH (an ImageFolder root or a CSV manifest) or --dataset NAME.")
    _check_inputs(data, dataset, out)
    hooks = _hooks()
    rec = load_recipe(recipe, hooks)
    if executor is not None or address is not None:
        from vetset.core.recipe import with_executor

        rec = with_executor(rec, executor, address)
    if nproc is not None:
        from vetset.plugins.train.ddp import with_nproc

        rec = with_nproc(rec, nproc, hooks.stages)
    if "train" in rec.stage_names():  # before anything is loaded or written: model name, weights, optimizer...
        from vetset.plugins.train.stage import check_options

        _check_train(check_options, rec)
    _fast_exit[0] = True
    _stop_on_signals()  # also while waiting for another command or the database, and during the kept-result check
    try:
        _hold_dataset(data, dataset)
        if not (force or resume) and _reuse(rec, hooks, data, dataset, out):
            return
        _database()
        the_run = Run(rec, hooks, data=data, dataset=dataset, out_dir=out, resume=resume,
                      log=lambda msg: console.print(msg, markup=False, highlight=False))
    except KeyboardInterrupt:
        err_console.print("interrupted before any stage ran: nothing was written.")
        raise typer.Exit(130) from None
    result, failed = None, None
    try:
        result = the_run.execute()
    except KeyboardInterrupt:
        # from here the stage's DataLoader and executor workers stop; library threads that lose
        # their peers then (multiprocessing's resource_sharer reports through sys.excepthook,
        # others through threading.excepthook) would print tracebacks among the one-sentence
        # message: the process exits with 130 once they are stopped
        threading.excepthook = lambda args: None
        sys.excepthook = lambda *exc: None
    except ChecksFailed as exc:  # the run finished: its summary is printed, as a kept run's is
        result, failed = the_run.result, exc
    finally:
        if the_run.dataset is not None:
            _print_where(the_run)
    if result is None:  # interrupted; out of the except block, so the stage's frames are gone
        import gc

        gc.collect()  # a DataLoader iterator of those frames shuts its workers down now
        stopped = _stop_children()
        err_console.print("interrupted: finished stages are saved; rerun with --resume to continue"
                          + (f" (stopped {stopped} worker processes)." if stopped else "."))
        # what is left at exit is joining library threads and pools (pymongo's monitors, torch,
        # multiprocessing), seconds after an interrupt: the results are written, so exit now
        lease = current_lease()
        if lease is not None:
            lease.release()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    _print_summary(result)
    if failed is not None:
        raise failed


def _hold_dataset(data: Path | None, dataset: str | None) -> None:
    """Wait until no other vetset command uses the dataset, then keep it for this process
    (:mod:`vetset.core.dataset_lock`)."""
    from vetset.core.dataset import default_dataset_names
    from vetset.core.dataset_lock import hold_dataset

    # without --dataset, either name the loader may pick; in name order, so two commands never wait on each other
    names = [dataset] if dataset else sorted(default_dataset_names(data)) if data is not None else []
    for name in names:
        hold_dataset(name, say=lambda m: err_console.print(m, markup=False, highlight=False, soft_wrap=True))


def _reuse(rec, hooks, data: Path | None, dataset: str | None, out: Path | None) -> bool:
    """Print the last run's result and return True when nothing it read has changed
    (:mod:`vetset.core.rerun`); decided before FiftyOne or torch is imported."""
    from vetset.core.dataset import default_dataset_names
    from vetset.core.rerun import dataset_state, reusable
    from vetset.core.result import RESULT_FILE, evaluate_fail_on
    from vetset.core.run import DEFAULT_RUNS_DIR

    # without --dataset: the default name, or the one with the folder's hash when the default
    # holds another folder's images (core.dataset._default_name_for); the last result names which
    names = [dataset] if dataset else list(default_dataset_names(data)) if data is not None else []
    lease = ensure_server(wait=False)
    previous = None
    for name in names:
        out_dir = out.expanduser().resolve() if out else (Path.cwd() / DEFAULT_RUNS_DIR / name).resolve()
        previous = reusable(rec, hooks, data, name, out_dir, wait_for_database=lease.wait if lease else None)
        if previous is not None:
            break
    if previous is None:
        return False
    if not dataset and name == names[0] and dataset_state(names[1]) is not None:
        return False  # the loader would now pick the folder's own dataset: a full run says which
    console.print(f"nothing changed since the run that finished at {previous['finished_at']} (the source, the "
                  f"dataset, the recipe, the outputs, vetset): its results are kept; --force runs it again",
                  markup=False, highlight=False, soft_wrap=True)
    console.print(f"dataset: {name}  results: {out_dir / RESULT_FILE}", markup=False, highlight=False, soft_wrap=True)
    for res in previous.get("stages", {}).values():
        if isinstance(res, dict) and res.get("report_html"):
            console.print(f"report html: {res['report_html']}", markup=False, highlight=False, soft_wrap=True)
    _print_summary(previous, kept=True)
    failures = evaluate_fail_on(previous, rec.fail_on)["failures"]
    if failures:
        raise ChecksFailed(failures)
    return True


def _stop_on_signals() -> None:
    """Stop a run on SIGTERM and SIGHUP as on Ctrl-C (``KeyboardInterrupt``: the stages that
    finished are saved, fold and training checkpoints kept for ``--resume``), and take SIGINT
    back when the shell started the run in the background with it ignored (``cmd &``)."""
    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop at a time; the cleanup may take a second
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def _stop_children(timeout: float = 3.0) -> int:
    """Terminate this process's children (DataLoader and executor workers, torchrun), kill
    those left after ``timeout`` seconds; the database server this run started stays for the
    next command. Returns how many were stopped."""
    import psutil  # a FiftyOne dependency; only here

    lease = current_lease()
    keep = {lease.state.keeper_pid, lease.state.mongod_pid} if lease is not None and lease.state else set()
    kids = []
    for child in psutil.Process().children(recursive=True):
        try:  # multiprocessing's resource tracker cleans up after this process exits: left to do so
            if child.pid not in keep and "resource_tracker" not in " ".join(child.cmdline()):
                kids.append(child)
        except psutil.Error:
            pass
    for child in kids:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(kids, timeout=timeout)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    return len(kids)


def _print_where(the_run) -> None:
    ds = the_run.dataset
    console.print(f"dataset: {ds.name} ({len(ds)} samples)  saved views: {', '.join(ds.list_saved_views()) or '-'}",
                  markup=False, highlight=False, soft_wrap=True)
    result_json = the_run.out_dir / "result.json"
    if result_json.is_file():  # a run that failed in its first stage has written none
        console.print(f"results: {result_json}", markup=False, highlight=False, soft_wrap=True)
    shown: set[str] = set()
    for res in the_run.results.values():
        for key, label in (("report_html", "report html"), ("checkpoint", "checkpoint"),
                           ("output_dir", "augmented images")):
            path = res.get(key) if isinstance(res, dict) else None
            if path and path not in shown:
                shown.add(path)
                console.print(f"{label}: {path}", markup=False, highlight=False, soft_wrap=True)
    if "validate" in the_run.results and "validation_errors" in ds.list_saved_views():
        console.print(
            f"open the validation errors in the App: recipes app --dataset {ds.name}  "
            f"(or in Python: fo.launch_app(fo.load_dataset('{ds.name}').load_saved_view('validation_errors')))",
            markup=False, highlight=False, soft_wrap=True)


def _print_summary(result: dict, kept: bool = False) -> None:
    for line in diagnosis_lines(result):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"{'the kept run took' if kept else 'done in'} {result.get('duration_s', 0):.1f} s: " +
                  ", ".join(f"{k} {v:.1f} s" for k, v in result.get("stage_times_s", {}).items()),
                  markup=False, highlight=False)


@app.command("plan")
def plan(
    recipe: str = typer.Argument("augment", help="Recipe name or YAML file whose augment stage is planned."),
    data: Path | None = typer.Option(None, "--data", help="ImageFolder root or CSV manifest (filepath,label[,split])."),
    dataset: str | None = typer.Option(None, "--dataset", help="FiftyOne dataset name (default: vetset-<folder>)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder the run would use (default: ./vetset-runs/<dataset>)."),
) -> None:
    """Audit the data and print the augmentation plan (new train images per class, policy and cell); writes no image."""
    from vetset.core.recipe import load_recipe
    from vetset.plugins.augment.steps import cli_plan

    hooks = _hooks()
    load_recipe(recipe, hooks)  # a bad recipe or missing --data is reported before the database starts
    if data is None and dataset is None:
        raise VetsetError("Pass --data PATH (an ImageFolder root or a CSV manifest) or --dataset NAME.")
    _check_inputs(data, dataset, out)
    _hold_dataset(data, dataset)
    _database()
    for table in cli_plan(recipe, data, dataset, out, hooks, log=lambda m: console.print(m, markup=False, highlight=False)):
        console.print(table)


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("vetset-demo"), "--out", help="Folder to write the demo ImageFolder tree into."),
) -> None:
    """Write scikit-learn's bundled handwritten digits (1,797 8x8 images) as an ImageFolder tree."""
    from vetset.recipes.demo import write_digits

    root = write_digits(out)
    console.print(f"demo data: {root}", markup=False, highlight=False)
    console.print(f"next: recipes run full --data {root}", markup=False, highlight=False)


@app.command("plugins")
def plugins() -> None:
    """List registered plugins with their version and the hooks they implement."""
    table = Table("plugin", "version", "hooks")
    for info in _hooks().plugins_info():
        table.add_row(info["name"], info["version"], ", ".join(h.removeprefix("vetset_") for h in info["hooks"]))
    console.print(table)


@app.command("report")
def report(
    dataset: str = typer.Option(..., "--dataset", help="FiftyOne dataset name of an earlier run."),
    out: Path | None = typer.Option(None, "--out", help="Folder for report.html/report.md (default: the run's folder)."),
) -> None:
    """Rebuild the HTML report and Markdown summary from a run's stored result.json (nothing is recomputed)."""
    from vetset.plugins.report.stage import rebuild_report

    def say(msg: str) -> None:
        console.print(msg, markup=False, highlight=False, soft_wrap=True)

    _database()
    block = rebuild_report(dataset, out, _hooks(), log=say)
    say(f"report: {block['report_html']}")
    say(f"summary: {block['report_md']}")


@app.command("export-labels")
def export_labels(
    dataset: str = typer.Option(..., "--dataset", help="FiftyOne dataset name after the label_noise stage."),
    out: Path | None = typer.Option(None, "--out", help="New folder for <split>/<label>/<file> copies and labels.csv."),
    csv_file: Path | None = typer.Option(None, "--csv", help="Also write the label decisions to this CSV file."),
    unreviewed: str = typer.Option("keep", "--unreviewed",
                                   help="Flagged samples nobody tagged: keep (given label), suggested, or drop."),
    no_splits: bool = typer.Option(False, "--no-splits", help="Write <label>/<file> without split folders."),
) -> None:
    """Export reviewed labels: tags label_confirmed (take suggested_label) / label_rejected (keep given label)."""
    from vetset.plugins.label_noise.review import export_labels as do_export

    if unreviewed not in ("keep", "suggested", "drop"):
        raise VetsetError(f"--unreviewed must be keep, suggested or drop, not {unreviewed!r}.")
    _database()
    import fiftyone as fo

    if not fo.dataset_exists(dataset):
        raise VetsetError(f"FiftyOne dataset {dataset!r} does not exist; `fiftyone datasets list` shows the names.")
    res = do_export(fo.load_dataset(dataset), out, csv_file, unreviewed=unreviewed, splits=not no_splits)
    c = res["counts"]
    console.print(f"{res['exported']} images exported to {res['out']}" if res["out"] else "no images exported (no --out)",
                  markup=False, highlight=False)
    console.print(f"labels: {res['csv']}  ({c['changed']} changed; reviewed: {c['confirmed']} confirmed, "
                  f"{c['rejected']} rejected, {c['corrected']} corrected, {c['conflict']} conflicting; "
                  f"{c['unreviewed']} flagged but unreviewed, {c['dropped']} dropped)", markup=False, highlight=False)
    skipped = res.get("left_out") or {}
    if any(skipped.values()):
        console.print(f"left out: {skipped.get('unreadable', 0)} unreadable and {skipped.get('augmented', 0)} "
                      "augmented images (neither in the CSV nor in the folder)", markup=False, highlight=False)


from vetset.recipes.app_cli import app_cli  # noqa: E402  (fiftyone is imported lazily inside)
from vetset.recipes.db_cli import db_cli  # noqa: E402

app.add_typer(app_cli, name="app")
app.add_typer(db_cli, name="db")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 ok, 1 ``fail_on`` exceeded, 2 user error)."""
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:  # click/typer exit with the command's code
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except ChecksFailed as exc:
        err_console.print("fail_on: the run finished, but these gates of the recipe failed:",
                          markup=False, highlight=False)
        for failure in exc.failures:
            err_console.print(f"  - {failure}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except VetsetError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except Exception as exc:
        message = database_error(exc) or torch_build_error(exc)
        if message is None:
            raise
        err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
        return 2
    return 0


def database_error(exc: BaseException) -> str | None:
    """One sentence for a failure to reach FiftyOne's MongoDB, or ``None`` for other errors.

    Covers a ``FIFTYONE_DATABASE_URI`` that is malformed or unreachable (pymongo's errors,
    FiftyOne's ``ConnectionError``) and the embedded database failing to start
    (``ServiceListenTimeout``, e.g. while another process is starting it).
    """
    kind = type(exc)
    is_db = kind.__module__.startswith("pymongo") or kind.__name__ == "ServiceListenTimeout" or (
        isinstance(exc, ConnectionError) and "mongo" in str(exc).lower())
    if not is_db:
        return None
    detail = (str(exc).strip().splitlines() or [kind.__name__])[0].rstrip(".")
    if len(detail) > 200:
        detail = detail[:200] + "..."
    uri = os.environ.get("FIFTYONE_DATABASE_URI")
    if uri:
        return (f"cannot use the MongoDB server at FIFTYONE_DATABASE_URI={uri!r} ({kind.__name__}: {detail}); "
                "check the URI and that the server is running.")
    return (f"cannot start or reach FiftyOne's database ({kind.__name__}: {detail}); another FiftyOne process may "
            "be starting it (try again), or set FIFTYONE_DATABASE_URI to a running MongoDB server.")


def torch_build_error(exc: BaseException) -> str | None:
    """One sentence for a torchvision that does not match the installed torch, else ``None``.

    A torchvision built for another torch fails at import with ``RuntimeError: operator
    torchvision::nms does not exist`` (its compiled operators do not register), which
    surfaces wherever timm or torchvision is first imported.
    """
    if not (isinstance(exc, RuntimeError) and "torchvision::" in str(exc) and "does not exist" in str(exc)):
        return None
    try:
        from importlib.metadata import version

        builds = f" (installed: torch {version('torch')}, torchvision {version('torchvision')})"
    except Exception:
        builds = ""
    return (f"torchvision does not match the installed torch{builds}: {str(exc).splitlines()[0]}; reinstall both "
            "from the same index in one command, e.g. `pip install --force-reinstall torch torchvision`.")



def run_main() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    code = main()
    if _fast_exit[0] and os.environ.get("VETSET_FAST_EXIT", "1") != "0":
        _exit_now(code)
    sys.exit(code)



def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown once ``recipes run`` is done.

    Everything a command writes is written and closed when :func:`main` returns (atomic
    writes; FiftyOne's database has acknowledged every write). What the teardown would
    still do costs a second or more after a run: joining the worker pools' threads,
    multiprocessing's finalizers (the forkserver, the resource tracker), the atexit
    handlers of the libraries imported (FiftyOne, pymongo, torch) and freeing every module.
    Here: this process's database lease is released, the output streams are flushed, and
    ``os._exit`` ends it. The worker pools were shut down when their stage ended; what is
    left (the idle forkserver, multiprocessing's resource tracker, FiftyOne's own database
    service when ``VETSET_DB=fiftyone``) ends or carries on by itself when this process has
    gone, as after any exit. ``VETSET_FAST_EXIT=0`` exits the ordinary way.
    """
    lease = current_lease()
    if lease is not None:
        lease.release()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run_main()
