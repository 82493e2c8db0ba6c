"""Shared CLI helpers: bad input -> exit 2 with one line, rich console on stderr, tables."""
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn,
                           TimeElapsedColumn)
from rich.table import Table
from rich.text import Text

from recsys_kit.errors import DataError

# Progress and tables go to stderr so the last line of stdout stays machine-readable.
console = Console(stderr=True)


@contextmanager
def exit_on_bad_input():
    """DataError -> `error: <one line>` on stderr and exit 2. An OSError that no reader turned into
    a DataError (a disk filling up mid-run, a folder removed under us) ends the same way."""
    try:
        yield
    except DataError as err:
        fail(str(err))
    except OSError as err:
        path = err.filename if err.filename is not None else "a file"
        fail(f"{path}: {err.strerror or err}")


class StepsColumn(ProgressColumn):
    """`done/total`, or nothing for a task without a total (a closed-form fit: spinner, no count)."""

    def render(self, task: Task) -> Text:
        return Text("" if task.total is None else f"{int(task.completed)}/{int(task.total)}",
                    style="progress.download")


def progress_bar() -> Progress:
    """The rows `kit cv` and `kit tune` draw: spinner, what, bar, count, info, elapsed."""
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), StepsColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)


class FitRow:
    """The progress row of the fit in flight. An iterative model (the class says `iterative = True`)
    gets an epoch bar; a closed-form one (EASE, popularity, transition) reports no epochs, so it gets
    a spinner instead of a bar stuck at 0/60."""

    def __init__(self, progress: Progress, iterative: bool):
        self.progress, self.iterative = progress, iterative
        self.task = progress.add_task("", total=None, info="", visible=False)

    def start(self, what: str, epochs: int) -> None:
        """A new fit begins (a fold, a refit, a trial's fold); the elapsed time restarts with it."""
        if self.iterative:
            self.progress.reset(self.task, total=epochs, description=f"{what} epochs", info="", visible=True)
        else:
            self.progress.reset(self.task, total=None, description=f"{what} fitting (closed form)", info="",
                                visible=True)

    def epoch(self, event: dict) -> None:
        valid = event.get("valid_recall@10")
        info = f"loss {event['loss']:.2f}" + (f"  valid R@10 {valid:.4f}" if valid is not None else "")
        self.progress.update(self.task, completed=event["epoch"], info=info)

    def finish(self) -> None:
        """The fit is over: a spinner left behind would look busy forever; an epoch bar stays to be read."""
        if not self.iterative:
            self.progress.update(self.task, visible=False)

    def hide(self) -> None:
        self.progress.update(self.task, visible=False)


def model_is_iterative(model_name: str) -> bool:
    """Whether the model's fit reports epochs (imports the models, so torch: call it inside a command)."""
    from recsys_kit.models import REGISTRY

    return getattr(REGISTRY[model_name], "iterative", True)


def fail(message: str):
    """Print `error: message` as one line and exit 2 (bad input)."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(2)


def number(value, digits: int = 4) -> str:
    """A metric as text; a missing one (null in metrics.json: nothing to evaluate) as n/a."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def mean_std(metric: dict) -> str:
    """'mean +- std', or 'n/a (why)' when metrics.json holds no figure."""
    if metric.get("mean") is None:
        return f"n/a ({metric['reason']})" if metric.get("reason") else "n/a"
    return f"{metric['mean']:.4f} +- {metric['std']:.4f}"


def metrics_table(metrics: dict, title: str) -> Table:
    """Per fold, mean +- std, and the activity groups, for Recall@10 and NDCG@10."""
    table = Table(title=title)
    table.add_column("")
    table.add_column("Recall@10", justify="right")
    table.add_column("NDCG@10", justify="right")
    table.add_column("users", justify="right")
    recall, ndcg = metrics["recall@10"], metrics["ndcg@10"]
    for fold, (r, n) in enumerate(zip(recall["folds"], ndcg["folds"])):
        table.add_row(f"fold {fold + 1}", number(r), number(n), "")
    table.add_row("[bold]mean +- std", f"[bold]{mean_std(recall)}", f"[bold]{mean_std(ndcg)}",
                  f"{metrics['users_evaluated']:,}")
    if recall.get("lb_estimate") is not None:
        table.add_row("[bold]leaderboard estimate", f"[bold]{recall['lb_estimate']:.4f}", "", "")
    groups = metrics.get("groups", {})
    for group, values in groups.get("recall@10", {}).items():
        low, high = values["activity_range"]
        table.add_row(f"activity {group} ({low}-{high} items)", number(values["mean"]),
                      number(groups["ndcg@10"][group]["mean"]), f"{values['users']:,}")
    return table


def lb_line(metrics: dict) -> str:
    """', leaderboard estimate x [lo, hi]' when the run has one, else ''."""
    estimate = metrics.get("lb_estimate") or {}
    if estimate.get("recall@10") is None:
        return f", no leaderboard estimate ({estimate['reason']})" if "reason" in estimate else ""
    low, high = estimate["interval90"]
    return f", leaderboard estimate {estimate['recall@10']:.4f} [{low:.4f}, {high:.4f}]"


def target_kind_line(metrics: dict) -> str:
    """'Recall@10 on the last item x, on the random picks y' from metrics.json "by_target"."""
    by_target = metrics.get("by_target") or {}
    parts = [f"on the {label} {number(by_target[kind]['recall@10'])}" for kind, label in
             (("last", "time-tail item"), ("random", "random earlier picks")) if kind in by_target]
    return ("Recall@10 " + ", ".join(parts)) if parts else ""


def time_filter_line(metrics: dict) -> str:
    """What the time-consistency filter's fitted margin would do, from metrics.json "time_filter"."""
    fitted = metrics.get("time_filter")
    if not fitted:
        return ""
    if fitted.get("margin") is None:
        return f"; time filter: off ({fitted.get('reason') or 'no margin raised OOF Recall@10'})"
    half = fitted.get("holdout_half")  # fitted on half the users, scored on the rest: not in-sample
    half_text = f"; on held-out users {half['gain']:+.4f}" if half else ""
    return (f"; time filter: margin {fitted['margin']:g} takes OOF Recall@10 {fitted['recall@10_off']:.4f} -> "
            f"{fitted['recall@10']:.4f}{half_text} (apply with kit submit --time-filter)")


def package_version() -> str:
    """The installed package's version (pyproject.toml); recsys_kit.__version__ when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("recsys-kit")
    except PackageNotFoundError:
        from recsys_kit import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"recsys-kit {package_version()}")
        raise typer.Exit()


def app_options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit")] = False,
):
    """Options of `kit` itself, before the command (registered as the app's callback)."""


def calibrated_line(run_dir) -> str | None:
    """The run's estimate calibrated on the public scores recorded for other runs, with the pairs it rests on."""
    from recsys_kit import api

    fitted = api.calibrated(run_dir)
    if fitted is None:
        return None
    interval = fitted["interval90"]
    spread = f" (90% interval {interval[0]:.4f} .. {interval[1]:.4f})" if interval else ""
    family = f" of {fitted['family']} runs" if fitted["family"] else ""
    basis = " (from OOF: this run has no estimate)" if fitted.get("basis") == "oof" else ""
    return (f"calibrated on {fitted['pairs']} recorded public score(s){family}: leaderboard "
            f"{fitted['value']:.4f}{spread}{basis}")
