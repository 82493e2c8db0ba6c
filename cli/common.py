"""Shared CLI helpers: bad input -> exit 2 with one line, rich console on stderr, tables."""
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.table import Table

from recsys_kit.errors import DataError

# Progress and tables go to stderr so the last line of stdout stays machine-readable.
console = Console(stderr=True)


@contextmanager
def exit_on_bad_input():
    try:
        yield
    except DataError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)


def metrics_table(metrics: dict, title: str) -> Table:
    """Per fold, mean +- std, and the activity groups, for Recall@10 and NDCG@10."""
    table = Table(title=title)
    table.add_column("")
    table.add_column("Recall@10", justify="right")
    table.add_column("NDCG@10", justify="right")
    table.add_column("users", justify="right")
    recall, ndcg = metrics["recall@10"], metrics["ndcg@10"]
    for fold, (r, n) in enumerate(zip(recall["folds"], ndcg["folds"])):
        table.add_row(f"fold {fold + 1}", f"{r:.4f}", f"{n:.4f}", "")
    table.add_row("[bold]mean +- std", f"[bold]{recall['mean']:.4f} +- {recall['std']:.4f}",
                  f"[bold]{ndcg['mean']:.4f} +- {ndcg['std']:.4f}", f"{metrics['users_evaluated']:,}")
    if recall.get("lb_estimate") is not None:
        table.add_row("[bold]leaderboard estimate", f"[bold]{recall['lb_estimate']:.4f}", "", "")
    groups = metrics.get("groups", {})
    for group, values in groups.get("recall@10", {}).items():
        low, high = values["activity_range"]
        table.add_row(f"activity {group} ({low}-{high} items)", f"{values['mean']:.4f}",
                      f"{groups['ndcg@10'][group]['mean']:.4f}", f"{values['users']:,}")
    return table


def lb_line(metrics: dict) -> str:
    """', leaderboard estimate x [lo, hi]' when the run has one, else ''."""
    estimate = metrics.get("lb_estimate") or {}
    if estimate.get("recall@10") is None:
        return f", no leaderboard estimate ({estimate['reason']})" if "reason" in estimate else ""
    low, high = estimate["interval90"]
    return f", leaderboard estimate {estimate['recall@10']:.4f} [{low:.4f}, {high:.4f}]"
