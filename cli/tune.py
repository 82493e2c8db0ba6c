"""`kit tune`: Optuna over the K-fold CV objective; prints the best config file last."""
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from cli.common import FitRow, console, exit_on_bad_input, model_is_iterative, progress_bar


def tune(
    data: Annotated[Path, typer.Option(help="Contest-layout folder with train_ratings.csv")],
    trials: Annotated[int, typer.Option(help="Finished trials the study should hold, all workers together")],
    config: Annotated[Optional[Path], typer.Option(help="Base model config TOML, e.g. configs/multidae.toml")] = None,
    folds: Annotated[int, typer.Option(help="Number of user folds (at least 2)")] = 5,
    storage: Annotated[Optional[str], typer.Option(
        help="Shared study storage: a SQLAlchemy URL (postgresql://user:pass@host/db) or a journal "
             "file path; default: journal.log in the study directory")] = None,
    study: Annotated[Optional[str], typer.Option(
        help="Study name and directory under --runs-dir (default: tune-<config name>); "
             "the same name resumes the study")] = None,
    search: Annotated[Optional[Path], typer.Option(
        help="Search space TOML (default: configs/search/<model>.toml)")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where the study directory lives")] = Path("runs"),
    seed: Annotated[Optional[int], typer.Option(help="Study seed (overrides the config's): holdout, "
                                                     "folds, sampler and per-trial seeds")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    pruner_startup: Annotated[int, typer.Option(help="Complete trials before pruning starts")] = 5,
    pruner_warmup: Annotated[int, typer.Option(help="Folds of every trial never pruned")] = 0,
    keep_scores: Annotated[bool, typer.Option(help="Keep every trial's OOF score matrix (trials write no test scores)")] = False,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Base config override, e.g. train.epochs=5; a searched field set here is pinned, "
                      "not searched")] = None,
):
    """Search the model's space (configs/search/<model>.toml) for the best OOF Recall@10.

    A parameter given with --set is pinned: it leaves the search space and keeps the given value."""
    # Imported here, not at the top: optuna and torch come with them, and `kit --help` should not wait.
    import optuna

    from recsys_kit import api

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bars say it better
    with exit_on_bad_input():
        try:
            result = _run_with_progress(data, config, trials, folds, runs_dir, dict(
                overrides=set_ or [], search=search, study=study, storage=storage, seed=seed, device=device,
                pruner_startup=pruner_startup, pruner_warmup=pruner_warmup, keep_scores=keep_scores), api.tune)
        except KeyboardInterrupt:
            console.print("interrupted: the trial in flight is queued again; rerun the same command to resume")
            raise typer.Exit(130)
    console.print(_top_table(result))
    if result.importances:
        console.print(_importance_table(result.importances))
    else:
        console.print("parameter importances: not enough complete trials yet")
    for path in result.plots:
        console.print(f"plot: {path}")
    if result.plots_note:
        console.print(result.plots_note, markup=False)
    counts = result.counts
    console.print(f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed; "
                  f"trials table {result.study_dir / 'trials.csv'}")
    if result.best_config is None:
        typer.echo("error: no trial completed yet; rerun the command to continue the study", err=True)
        raise typer.Exit(1)
    console.print(f"best OOF Recall@10 {result.best_value:.4f} (trial {result.best_trial})")
    typer.echo(str(result.best_config))


def _run_with_progress(data, config, trials: int, folds: int, runs_dir, options: dict, run_tune):
    # Drawn from the first event after the data is loaded (the headline) and the study opened: the
    # storage, the study's identity and the folds are checked by then, so their errors never land
    # under an info line and an empty bar.
    progress = progress_bar()
    status = console.status("loading data")
    trials_task = progress.add_task("trials", total=trials, info="")
    folds_task = progress.add_task("folds", total=folds, info="", visible=False)
    fit: list[FitRow] = []  # the trial's fold in flight: epochs as they pass, not only fold ends
    best = {"value": None}
    headline: list[str] = []

    def best_text():
        return "" if best["value"] is None else f"best R@10 {best['value']:.4f}"

    def on_event(event):
        kind = event["kind"]
        if kind == "loading":
            status.start()
            return
        if kind == "loaded":
            status.stop()
            headline.append(_headline(event, data))
            fit.append(FitRow(progress, model_is_iterative(event["model"])))
            return
        if not progress.live.is_started:
            console.print(headline[0])
            progress.start()
        if kind == "study":
            best["value"] = event["best"]
            verb = "resuming" if event["resumed"] else "starting"
            console.print(f"{verb} study {event['name']} in {event['study_dir']} (storage {event['storage']})")
            progress.update(trials_task, completed=event["done"], info=best_text())
        elif kind == "trial_start":
            again = f" (re-run of {event['retry_of']})" if event.get("retry_of") is not None else ""
            progress.update(folds_task, completed=0, visible=True, info="",
                            description=f"trial {event['number']}{again} folds")
        elif kind == "fold_start":
            fit[0].start(f"trial {event['trial']} fold {event['fold'] + 1}", event["epochs"])
        elif kind == "epoch":
            fit[0].epoch(event)
        elif kind == "fold_end":
            fit[0].finish()
            progress.update(folds_task, completed=event["fold"] + 1,
                            info=f"fold {event['fold'] + 1} R@10 {event['recall@10']:.4f}")
        elif kind == "trial_end":
            best["value"] = event["best"]
            shown = "pruned" if event["state"] == "PRUNED" else (
                f"R@10 {event['value']:.4f}" if event["value"] is not None else event["state"].lower())
            progress.update(trials_task, completed=event["done"], info=f"{best_text()}  last: {shown}")
            progress.update(folds_task, visible=False)
            fit[0].hide()
        elif kind == "requeued":
            console.print(f"trial {event['number']} was left running by a dead worker: queued again")
        elif kind == "note":
            console.print(f"note: {event['message']}", markup=False)

    try:
        return run_tune(data, config, trials, folds, runs_dir=runs_dir, on_event=on_event, **options)
    finally:
        status.stop()
        progress.stop()


def _headline(event: dict, data) -> str:
    """What is tuned on what: the model, the data's size, the search space and the pinned values."""
    text = (f"[bold]{event['model']}[/] on {data}: {event['users']:,} users, {event['items']:,} items; "
            f"{event['params']} parameters from {event['search']}, device {event['device']}")
    if event["pinned"]:  # one line: the values every trial keeps instead of searching them
        text += "\npinned by --set, not searched: " + escape(", ".join(
            f"{key} = {value}" for key, value in event["pinned"].items()))
    return text


def _top_table(result) -> Table:
    table = Table(title=f"{result.study_dir.name}: best trials (OOF Recall@10, mean over folds)")
    table.add_column("trial", justify="right")
    table.add_column("Recall@10", justify="right")
    table.add_column("+- std", justify="right")
    table.add_column("parameters")
    for row in result.top:
        params = ", ".join(f"{k}={_short(v)}" for k, v in row["params"].items())
        std = "" if row["std"] is None else f"{row['std']:.4f}"
        table.add_row(str(row["number"]), f"{row['value']:.4f}", std, params)
    return table


def _importance_table(importances: dict) -> Table:
    table = Table(title="parameter importances (fANOVA)")
    table.add_column("parameter")
    table.add_column("importance", justify="right")
    for key, value in importances.items():
        table.add_row(key, f"{value:.3f}")
    return table


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
