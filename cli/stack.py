"""`kit stack RUN RUN ...`: a second stage learned on the members' OOF candidates; prints its run directory last."""
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.common import calibrated_line, console, exit_on_bad_input, metrics_table, number

STAGES = {"oof": "OOF candidates and features", "rankers": "fitting rankers (one per fold, one on all)",
          "test": "test candidates and scores"}


def stack(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR", show_default=False,
                                                help="Two or more runs from kit cv (or kit ensemble) on the same "
                                                     "data, holdout and folds")],
    data: Annotated[Optional[Path], typer.Option(help="The contest folder the runs were made on: adds time and "
                                                      "side features (recency windows, item age, release year, "
                                                      "genre share)")] = None,
    candidates: Annotated[int, typer.Option(help="Each member's top-N unseen items per user become candidates")] = 50,
    name: Annotated[Optional[str], typer.Option(help="Run name (default: stack-timestamp)")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run directories are created")] = Path("runs"),
    seed: Annotated[int, typer.Option(help="Base seed of the rankers and their negative samples")] = 0,
    fallback: Annotated[bool, typer.Option(help="Keep the best member unless the stack's OOF gain over it is "
                                                "clear of zero")] = True,
):
    """Rerank the union of the members' top-N candidates with a gradient-boosted ranker fitted on OOF rows
    (fold f's users scored by a ranker that never saw them); writes OOF and test scores and metrics.json."""
    from recsys_kit import api  # scikit-learn and the members' files: not for `kit --help`

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console)
    tasks: dict[str, int] = {}

    def on_event(event):
        kind = event["kind"]
        if kind == "start":
            console.print(f"[bold]{len(event['members'])} runs[/], {event['users']:,} users x {event['items']:,} "
                          f"items, top {event['candidates']} of each member"
                          + ("" if event["data"] else "; no --data: no time or side features"))
            progress.start()
        elif kind == "stage":
            tasks[event["stage"]] = progress.add_task(STAGES[event["stage"]], total=event["total"])
        elif kind == "advance":
            progress.update(tasks[event["stage"]], advance=1)

    with exit_on_bad_input():
        try:
            result = api.stack(runs, data=data, runs_dir=runs_dir, name=name, on_event=on_event,
                               candidates=candidates, seed=seed, fallback=fallback)
        finally:
            progress.stop()
    metrics = result.metrics
    console.print(members_table(metrics))
    console.print(metrics_table(metrics, title=f"{result.name}: out-of-fold metrics of the stack"))
    choice = metrics["choice"]
    low, high = choice["gain_interval90"]
    console.print(f"candidates hold {number(metrics['candidate_recall'])} of the hidden items "
                  f"({metrics['candidates_per_user']:.0f} per user); gain over {choice['rival']} "
                  f"{choice['gain']:+.4f} (90% interval {low:+.4f} .. {high:+.4f}): [bold]{choice['used']}[/] "
                  f"({choice['reason']})  ({metrics['wall_seconds']:.0f} s)")
    calibrated = calibrated_line(result.run_dir)
    if calibrated:
        console.print(calibrated)
    typer.echo(str(result.run_dir))


def members_table(metrics: dict) -> Table:
    table = Table(title="members' own top-10 vs the stack (OOF)")
    table.add_column("run", overflow="fold")
    table.add_column("Recall@10", justify="right")
    table.add_column("NDCG@10", justify="right")
    for member in metrics["members"]:
        table.add_row(member["name"], number(member["recall@10"]), number(member["ndcg@10"]))
    table.add_row("[bold]stack", f"[bold]{number(metrics['recall@10']['mean'])}",
                  f"[bold]{number(metrics['ndcg@10']['mean'])}")
    return table
