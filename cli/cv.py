"""`kit cv`: K-fold cross-validation of one model config; prints the run directory last."""
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import (FitRow, calibrated_line, console, exit_on_bad_input, lb_line, mean_std, metrics_table, model_is_iterative,
                        progress_bar, target_kind_line, time_filter_line)


def cv(
    data: Annotated[Path, typer.Option(help="Contest-layout folder with train_ratings.csv")],
    config: Annotated[Optional[Path], typer.Option(help="Model config TOML, e.g. configs/multidae.toml")] = None,
    folds: Annotated[int, typer.Option(help="Number of user folds (at least 2)")] = 5,
    name: Annotated[Optional[str], typer.Option(help="Run name (default: model-timestamp)")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run directories are created")] = Path("runs"),
    seed: Annotated[Optional[int], typer.Option(help="Base seed (overrides the config's)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override, e.g. train.epochs=5")] = None,
    refit: Annotated[str, typer.Option(help="Test scores for the submission: full = one model fitted on every "
                                            "public row | folds = mean of the fold models | both")] = "full",
    refit_seeds: Annotated[int, typer.Option(help="Average this many refits with their own seeds (bagging; the "
                                                  "estimate bags as many fits per level); 0 = 3 for models with "
                                                  "random fitting, 1 for EASE and popularity")] = 0,
    lb_estimate: Annotated[bool, typer.Option(help="Estimate the leaderboard (two extra fits one and two "
                                                   "levels of hiding down)")] = True,
):
    """Train one model per fold, write OOF and test score matrices and metrics.json."""
    from recsys_kit import api  # torch comes with the run: imported here, so `kit --help` does not wait for it

    progress = progress_bar()
    status = console.status("loading data")
    with exit_on_bad_input():
        folds_task = progress.add_task("folds", total=folds, info="", visible=False)
        fit: list[FitRow] = []

        def on_event(event):
            kind = event["kind"]
            if kind == "loading":
                status.start()
            elif kind == "loaded":
                status.stop()
                console.print(f"[bold]{event['model']}[/] on {data}: {event['users']:,} users, {event['items']:,} "
                              f"items, {event['interactions']:,} interactions ({event['duplicates']:,} duplicates "
                              f"collapsed), device {event['device']}")
                fit.append(FitRow(progress, model_is_iterative(event["model"])))
                progress.update(folds_task, visible=True)
                progress.start()
            elif kind == "fold_start":
                fit[0].start(f"fold {event['fold'] + 1}", event["epochs"])
            elif kind == "stage_start":
                fit[0].start(event["stage"], event["epochs"])
            elif kind == "epoch":
                fit[0].epoch(event)
            elif kind == "fold_end":
                fit[0].finish()
                progress.update(folds_task, advance=1, info=f"fold {event['fold'] + 1} R@10 {event['recall@10']:.4f}")
            elif kind == "end":
                fit[0].finish()
            elif kind == "start":
                say_start(event, progress, folds_task)

        try:
            result = api.cross_validate(data, config, folds, overrides=set_ or [], runs_dir=runs_dir, name=name,
                                        seed=seed, device=device, refit=refit, refit_seeds=refit_seeds,
                                        lb_estimate=lb_estimate, on_event=on_event)
        finally:
            status.stop()
            progress.stop()
    metrics = result.metrics
    console.print(metrics_table(metrics, title=f"{result.name}: out-of-fold metrics"))
    console.print(target_kind_line(metrics) + time_filter_line(metrics))
    console.print(f"OOF Recall@10 {mean_std(metrics['recall@10'])}{lb_line(metrics)}  "
                  f"({metrics['wall_seconds']:.0f} s)")
    if metrics.get("precision"):  # what train.precision ran in, and why (auto: a cached probe)
        from recsys_kit.models.precision import describe as describe_precision  # after the run: torch is in

        console.print(describe_precision(metrics["precision"]), markup=False, soft_wrap=True)
    calibrated = calibrated_line(result.run_dir)
    if calibrated:
        console.print(calibrated)
    typer.echo(str(result.run_dir))


def say_start(event: dict, progress, folds_task) -> None:
    """The run's "start" event: a resumed run's folds, users left without a target, the holdout's note."""
    if event["resumed_folds"]:
        done = len(event["resumed_folds"])
        console.print(f"continuing the unfinished run {event['run_dir']}: {done} of "
                      f"{event['folds']} folds were done before it stopped")
        progress.update(folds_task, completed=done)
    if event["users_without_target"]:
        console.print(f"{event['users_without_target']:,} users have too few items for a "
                      f"target and are left out of the metrics")
    if event["inputs"]["note"]:
        console.print(f"[yellow]note[/]: {event['inputs']['note']}")
