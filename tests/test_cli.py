"""synth -> cv -> submit -> validate through Typer's CliRunner, and the never-overwrite rules."""
import io
import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli.common import FitRow, progress_bar
from cli.main import app
from recsys_kit.config import TrainConfig
from recsys_kit.models import REGISTRY
from tests.conftest import two_cluster_rows

runner = CliRunner()


def kit(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def contest(tmp_path_factory):
    root = tmp_path_factory.mktemp("contest")
    kit("synth", root / "data", "--users", 300, "--items", 150, "--interactions", 9000, "--seed", 1)
    return root


def test_synth_cv_submit_validate(contest):
    runs = contest / "runs"
    result = kit("cv", "--data", contest / "data", "--config", "configs/multidae.toml", "--folds", 3,
                 "--runs-dir", runs, "--name", "dae", "--set", "train.epochs=4", "--device", "cpu",
                 "--refit-seeds", 2)
    run_dir = runs / "dae"
    assert result.stdout.strip().splitlines()[-1] == str(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["recall@10"]["folds"]) == 3 and 0 < metrics["recall@10"]["mean"] <= 1
    assert metrics["users_evaluated"] > 250
    assert set(metrics["groups"]["recall@10"]) == {"0-20%", "20-40%", "40-60%", "60-80%", "80-100%"}
    for name in ("config.json", "environment.json", "folds.npy", "oof_scores.npy", "test_scores.npy"):
        assert (run_dir / name).exists()
    assert not list(run_dir.glob("*.tmp"))
    oof = np.load(run_dir / "oof_scores.npy")
    assert oof.dtype == np.float32 and not np.isnan(oof).any()
    # The submission's refit and the leaderboard estimate, printed next to OOF and kept in metrics.json.
    assert metrics["refit"]["mode"] == "full" and metrics["refit"]["epochs"] >= 1 and metrics["refit"]["seeds"] == 2
    estimate = metrics["recall@10"]["lb_estimate"]
    assert 0 < estimate <= 1 and f"leaderboard estimate {estimate:.4f}" in result.output.replace("\n", " ")

    csv = contest / "sub.csv"
    assert kit("submit", run_dir, "--out", csv).stdout.strip().splitlines()[-1] == str(csv)
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["user", "item"] and len(frame) == 300 * 10
    kit("validate", csv, "--data", contest / "data")
    # The CSV is the user's now: a second submit refuses to replace it.
    assert "already exists" in kit("submit", run_dir, "--out", csv, code=2).output

    # Same command twice: same folds, same OOF scores, same CSV (on CPU).
    kit("cv", "--data", contest / "data", "--config", "configs/multidae.toml", "--folds", 3,
        "--runs-dir", runs, "--name", "dae", "--set", "train.epochs=4", "--device", "cpu", "--refit-seeds", 2)
    again = runs / "dae-2"  # the first run is never overwritten
    assert np.array_equal(np.load(run_dir / "folds.npy"), np.load(again / "folds.npy"))
    assert np.array_equal(oof, np.load(again / "oof_scores.npy"))
    kit("submit", again, "--out", contest / "sub2.csv")
    assert (contest / "sub.csv").read_bytes() == (contest / "sub2.csv").read_bytes()


def test_validate_names_each_broken_rule(contest, tmp_path):
    kit("cv", "--data", contest / "data", "--config", "configs/popularity.toml", "--folds", 2,
        "--runs-dir", tmp_path / "runs", "--name", "pop")
    good = tmp_path / "good.csv"
    kit("submit", tmp_path / "runs" / "pop", "--out", good)
    frame = pd.read_csv(good)
    history = pd.read_csv(contest / "data" / "train_ratings.csv")
    seen_item = history.loc[history.user == frame.user.iloc[0], "item"].iloc[0]
    broken = frame.copy()
    broken.loc[0, "item"] = seen_item  # a seen item
    broken.loc[1, "item"] = broken.loc[2, "item"]  # a duplicate
    broken = broken[broken.user != frame.user.iloc[-1]]  # a missing user
    bad = tmp_path / "bad.csv"
    broken.to_csv(bad, index=False)
    output = kit("validate", bad, "--data", contest / "data", code=1).output
    assert "already has item" in output
    assert "twice" in output
    assert "missing" in output
    header = tmp_path / "header.csv"
    frame.rename(columns={"item": "movie"}).to_csv(header, index=False)
    assert "header must be exactly 'user,item'" in kit("validate", header, "--data", contest / "data", code=1).output


def test_synth_refuses_to_overwrite(contest):
    assert kit("synth", contest / "data", code=2).exit_code == 2


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_model_reports_epochs_exactly_when_it_declares_itself_iterative(name):
    # kit cv / kit tune draw an epoch bar or a spinner from the class's `iterative`: it must be true.
    epochs = []
    model = REGISTRY[name](REGISTRY[name].Config(), TrainConfig(epochs=1, batch_size=16, min_steps_per_epoch=1),
                           seed=0, device="cpu")
    model.fit(two_cluster_rows(), on_epoch=epochs.append)
    assert bool(epochs) == REGISTRY[name].iterative


@pytest.mark.parametrize("iterative, shown, hidden", [
    (True, ["fold 2 epochs", "1/60", "loss 3.25"], ["closed form"]),
    (False, ["fold 2 fitting (closed form)"], ["/60", "epochs"]),
])
def test_fit_row_draws_an_epoch_bar_or_a_spinner(iterative, shown, hidden):
    progress = progress_bar()
    fit = FitRow(progress, iterative)
    fit.start("fold 2", 60)
    if iterative:
        fit.epoch({"epoch": 1, "loss": 3.25})
    screen = Console(record=True, width=120, file=io.StringIO())
    screen.print(progress.make_tasks_table(progress.tasks))
    text = screen.export_text()
    assert all(word in text for word in shown), text
    assert not any(word in text for word in hidden), text


def test_cv_adapts_to_short_histories_and_says_so_in_one_line(tmp_path):
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(1, 121), 7)  # seven public rows a user, as a Yelp-like contest leaves
    items = np.concatenate([rng.choice(60, 7, replace=False) + 1 for _ in range(120)])
    (tmp_path / "data").mkdir()
    pd.DataFrame({"user": users, "item": items, "time": np.arange(len(users))}).to_csv(
        tmp_path / "data" / "train_ratings.csv", index=False)
    common = ("cv", "--data", tmp_path / "data", "--folds", 2, "--runs-dir", tmp_path / "runs",
              "--set", "model.name=popularity", "--refit", "none")
    adapted = " ".join(kit(*common, "--name", "adapted").output.split())
    assert "note: public rows are short (median 7): the holdout hides the last 1 + 2 random" in adapted
    metrics = json.loads((tmp_path / "runs" / "adapted" / "metrics.json").read_text())
    assert metrics["inputs"]["median_input_rows"] == 4 and metrics["inputs"]["hidden"] == [1, 2]
    fixed = " ".join(kit(*common, "--name", "fixed", "--set", "holdout.adapt_short=false").output.split())
    assert "note: the holdout leaves the median scored user 2 of their 7 public rows" in fixed
    shallow = kit(*common, "--name", "shallow", "--set", "holdout.n_random=2").output
    assert "note:" not in shallow
