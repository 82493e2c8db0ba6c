"""`kit cv`: K-fold cross-validation of one model config; prints the run directory last."""
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import (FitRow, console, exit_on_bad_input, lb_line, mean_std, metrics_table, model_is_iterative,
                        progress_bar, target_kind_line, time_filter_line)
from recsys_kit.runs import store
from recsys_kit import files
from recsys_kit.errors import DataError


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
    # Imported here, not at the top: torch comes with them, and `kit --help` should not wait for it.
    from recsys_kit.config import load_config
    from recsys_kit.cv.run import run_cv
    from recsys_kit.data.load import load_dataset
    from recsys_kit.protocol.holdout import assign_folds
    from recsys_kit.protocol.preflight import check_evaluable, check_folds
    from recsys_kit.cv.refit import RefitOptions
    from recsys_kit.models.train import resolve_device

    with exit_on_bad_input():
        # Everything that can be checked is checked before a line of progress is drawn.
        check_folds(folds)
        if name is not None:
            store.check_run_name(name)
        files.check_output_dir(runs_dir, "--runs-dir")
        run_config = load_config(config, set_ or [], seed)
        refit_options = RefitOptions(mode=refit, seeds=refit_seeds, lb_estimate=lb_estimate)
        try:
            device = resolve_device(device)
        except ValueError as err:
            raise DataError(str(err)) from None
        with console.status("loading data"):
            dataset = load_dataset(data)
        check_folds(folds, dataset.n_users, str(data))
        check_evaluable(dataset, run_config, assign_folds(dataset.n_users, folds, run_config.seed), str(data))
        console.print(f"[bold]{run_config.model_name}[/] on {data}: {dataset.n_users:,} users, "
                      f"{dataset.n_items:,} items, {dataset.matrix.nnz:,} interactions "
                      f"({dataset.summary['duplicates_collapsed']:,} duplicates collapsed), device {device}")
        with progress_bar() as progress:
            folds_task = progress.add_task("folds", total=folds, info="")
            fit = FitRow(progress, model_is_iterative(run_config.model_name))

            def on_event(event):
                kind = event["kind"]
                if kind == "fold_start":
                    fit.start(f"fold {event['fold'] + 1}", event["epochs"])
                elif kind == "stage_start":
                    fit.start(event["stage"], event["epochs"])
                elif kind == "epoch":
                    fit.epoch(event)
                elif kind == "fold_end":
                    fit.finish()
                    progress.update(folds_task, advance=1,
                                    info=f"fold {event['fold'] + 1} R@10 {event['recall@10']:.4f}")
                elif kind == "end":
                    fit.finish()
                elif kind == "start":
                    if event["resumed_folds"]:
                        done = len(event["resumed_folds"])
                        console.print(f"continuing the unfinished run {event['run_dir']}: {done} of "
                                      f"{event['folds']} folds were done before it stopped")
                        progress.update(folds_task, completed=done)
                    if event["users_without_target"]:
                        console.print(f"{event['users_without_target']:,} users have too few items for a "
                                      f"target and are left out of the metrics")

            run_dir = run_cv(dataset, run_config, folds, runs_dir, name=name, device=device, on_event=on_event,
                             refit=refit_options)
    metrics = store.read_json(run_dir / "metrics.json")
    console.print(metrics_table(metrics, title=f"{run_dir.name}: out-of-fold metrics"))
    console.print(target_kind_line(metrics) + time_filter_line(metrics))
    console.print(f"OOF Recall@10 {mean_std(metrics['recall@10'])}{lb_line(metrics)}  "
                  f"({metrics['wall_seconds']:.0f} s)")
    typer.echo(str(run_dir))

