"""`kit ensemble RUN RUN ...`: blend `kit cv` runs; prints the ensemble's run directory last."""
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.common import calibrated_line, console, exit_on_bad_input, lb_line, metrics_table
from recsys_kit.blending.methods import NORMALIZERS

STAGES = {"cache": "caching candidates", "fit": "fitting weights", "check": "checking the gain on half B",
          "oof": "blending OOF scores",
          "test": "blending test scores"}
NORMALIZE_HELP = f"Per-user normalisation before blending: {' | '.join(NORMALIZERS)} (vote always uses ranks)"
# recsys_kit.ensemble.DEFAULT_NORMALIZE, spelled out: that module brings torch, and `kit --help` should not
# wait for it (tests/test_cli_start.py checks the two agree).
DEFAULT_NORMALIZE = "zscore"


def ensemble(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR", show_default=False,
                                                help="Two or more run directories from kit cv (or kit ensemble) "
                                                     "on the same data, holdout and folds")],
    name: Annotated[Optional[str], typer.Option(help="Run name (default: ensemble-timestamp)")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run directories are created")] = Path("runs"),
    method: Annotated[str, typer.Option(help="fit: weights fitted on OOF Recall@10 | slots: fitted weights, "
                                             "the top S of the 10 slots reserved for one member's own top-S "
                                             "(S and member fitted on OOF too; for sequential models) | "
                                             "vote: top-N hard voting | mean: equal weights")] = "fit",
    normalize: Annotated[str, typer.Option(help=NORMALIZE_HELP)] = DEFAULT_NORMALIZE,
    seed: Annotated[int, typer.Option(help="Base seed of the half split and the fitting sample")] = 0,
    top_n: Annotated[int, typer.Option(help="vote: each member's top-N items get a vote")] = 10,
    rank_weighted: Annotated[bool, typer.Option(help="vote: weight a vote by its position in the top-N")] = False,
    bags: Annotated[int, typer.Option(help="fit, slots: average the weights of this many bootstrap "
                                                  "fits")] = 8,
    fallback: Annotated[bool, typer.Option(help="fit, slots: submit the best member alone when the blend's "
                                                "held-out gain is not clear of zero")] = True,
    fallback_rule: Annotated[str, typer.Option(help="fit: when the gain is not clear of zero, clear: the best "
                                                     "member alone | shrink: the fitted weights times "
                                                     "P(gain > 0), the rest on the best member")] = "shrink",
):
    """Blend runs on out-of-fold scores; writes OOF and test score matrices and metrics.json."""
    from recsys_kit import api  # torch comes with it

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
    tasks: dict[str, int] = {}

    def on_event(event):
        kind = event["kind"]
        if kind == "start":  # every input is checked by now (api.blend): the bars may be drawn
            console.print(f"[bold]{len(event['members'])} runs[/], {event['users']:,} users x "
                          f"{event['items']:,} items, method {event['method']}")
            progress.start()
        elif kind == "stage":
            tasks[event["stage"]] = progress.add_task(STAGES[event["stage"]], total=event["total"], info="")
        elif kind == "advance":
            info = ("weights " + " ".join(f"{w:.2f}" for w in event["weights"])) if "weights" in event else ""
            progress.update(tasks[event["stage"]], advance=1, info=info)

    with exit_on_bad_input():
        try:
            result = api.blend(runs, runs_dir=runs_dir, name=name, method=method, on_event=on_event,
                               normalize=normalize, seed=seed, top_n=top_n, rank_weighted=rank_weighted, bags=bags,
                               fallback=fallback, fallback_rule=fallback_rule)
        finally:
            progress.stop()
        metrics, run_dir = result.metrics, result.run_dir
    console.print(members_table(metrics))
    console.print(metrics_table(metrics, title=f"{run_dir.name}: out-of-fold metrics of the blend"))
    half = metrics["holdout_half"]
    console.print(f"held-out half: Recall@10 {half['recall@10']:.4f}, NDCG@10 {half['ndcg@10']:.4f} "
                  f"({half['users_evaluated']:,} users); OOF Recall@10 {metrics['recall@10']['mean']:.4f}"
                  f"{lb_line(metrics)}  ({metrics['wall_seconds']:.0f} s)")
    reserved = {"written": metrics.get("slots"), "fitted on all users": metrics.get("fit", {}).get("slots"),
                "fitted on half A": metrics["holdout_half"].get("slots")}
    if any(r and r["slots"] for r in reserved.values()):
        console.print("reserved slots: " + "; ".join(
            f"{what} {r['slots']} for {r['member']}" if r["slots"] else f"{what} none"
            for what, r in reserved.items() if r))
    choice = metrics.get("choice", {})
    if "gain_interval90" in choice:
        low, high = choice["gain_interval90"]
        console.print(f"gain over {choice['rival']} on half B {choice['gain_half_b']:+.4f} (90% interval "
                      f"{low:+.4f} .. {high:+.4f}): [bold]{choice['used']}[/] ({choice['reason']})")
    calibrated = calibrated_line(run_dir)
    if calibrated:
        console.print(calibrated)
    typer.echo(str(run_dir))


def members_table(metrics: dict) -> Table:
    """Members vs the blend on the held-out half B, with the weights."""
    fitted = bool(metrics.get("fit"))  # a method that fits: weights of the half-A fit too
    table = Table(title=f"{metrics['method']} blend ({metrics['normalize']}): held-out half of the users")
    table.add_column("run", no_wrap=False, overflow="fold", min_width=10)  # a name is never cut short
    table.add_column("weight", justify="right")
    if fitted:
        table.add_column("weight (half A)", justify="right")
    table.add_column("Recall@10", justify="right")
    table.add_column("NDCG@10", justify="right")
    table.add_column("OOF Recall@10 (all)", justify="right")
    table.add_column("LB estimate", justify="right")
    for member in metrics["members"]:
        half, oof = member["holdout_half"], member.get("recall@10") or {}
        row = [member["name"], f"{member['weight']:.3f}"]
        row += [f"{member['weight_half_a']:.3f}"] if fitted else []
        table.add_row(*row, f"{half['recall@10']:.4f}", f"{half['ndcg@10']:.4f}",
                      f"{oof['mean']:.4f}" if "mean" in oof else "",
                      f"{oof['lb_estimate']:.4f}" if oof.get("lb_estimate") is not None else "")
    best = max(m["holdout_half"]["recall@10"] for m in metrics["members"])
    half = metrics["holdout_half"]
    style = "bold green" if half["recall@10"] > best else "bold red"
    row = ["[bold]blend", "1.000"] + (["1.000"] if fitted else [])
    estimate = metrics["recall@10"].get("lb_estimate")
    table.add_row(*row, f"[{style}]{half['recall@10']:.4f}", f"[bold]{half['ndcg@10']:.4f}",
                  f"[bold]{metrics['recall@10']['mean']:.4f}", f"[bold]{estimate:.4f}" if estimate is not None else "")
    return table
