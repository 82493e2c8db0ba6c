"""`kit cv` killed with SIGKILL after a fold continues where it stopped when run again."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from recsys_kit.config import RunConfig
from recsys_kit.cv.run import run_cv
from recsys_kit.data.dataset import from_interactions
from recsys_kit.models.popularity import PopularityConfig
from recsys_kit.cv.refit import RefitOptions
from recsys_kit.runs.resume import PROGRESS

KIT = Path(sys.executable).with_name("kit")


@pytest.fixture(scope="module")
def contest(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    result = CliRunner().invoke(app, ["synth", str(root / "data"), "--users", "400", "--items", "200",
                                      "--interactions", "16000", "--seed", "3"])
    assert result.exit_code == 0, result.output
    return root


def cv_command(contest: Path, runs: Path) -> list[str]:
    # No --name: the rerun must find the killed run under its timestamped default name.
    return [str(KIT), "cv", "--data", str(contest / "data"), "--config", "configs/multidae.toml",
            "--folds", "4", "--runs-dir", str(runs), "--set", "train.epochs=12", "--set", "train.patience=100",
            "--device", "cpu", "--refit", "folds", "--no-lb-estimate"]


def folds_done(runs: Path) -> int:
    for progress in runs.glob("*/" + PROGRESS):
        try:
            return len(json.loads(progress.read_text())["folds_done"])
        except (ValueError, KeyError):
            return 0  # caught mid-rename
    return 0


def test_killed_cv_resumes_and_matches_an_uninterrupted_run(contest):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    straight = contest / "straight"
    subprocess.run(cv_command(contest, straight), check=True, env=env, capture_output=True, timeout=600)

    runs = contest / "killed"
    process = subprocess.Popen(cv_command(contest, runs), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while folds_done(runs) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_at_kill = folds_done(runs)
    assert 2 <= done_at_kill < 4, "the kill must land between folds 2 and the end"
    assert not list(runs.glob("*/metrics.json"))

    result = subprocess.run(cv_command(contest, runs), env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (run_dir,) = [path for path in runs.iterdir() if path.is_dir()]  # continued, not started over
    assert result.stdout.strip().splitlines()[-1] == str(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_folds"] == list(range(done_at_kill))
    assert not list(run_dir.glob("*.tmp"))
    (straight_dir,) = [path for path in straight.iterdir() if path.is_dir()]
    for name in ("oof_scores.npy", "test_scores.npy"):
        np.testing.assert_array_equal(np.load(run_dir / name), np.load(straight_dir / name))
    expected = json.loads((straight_dir / "metrics.json").read_text())
    assert metrics["recall@10"]["folds"] == expected["recall@10"]["folds"]


def test_a_finished_run_is_never_resumed_and_a_changed_config_starts_anew(tmp_path):
    rng = np.random.default_rng(0)
    dataset = from_interactions(rng.integers(0, 30, 600), rng.integers(0, 40, 600))
    config = RunConfig(model=PopularityConfig())
    options = RefitOptions(mode="none", lb_estimate=False)
    first = run_cv(dataset, config, 3, tmp_path, name="pop", refit=options)
    again = run_cv(dataset, config, 3, tmp_path, name="pop", refit=options)
    assert again != first and first.name == "pop"
    # An unfinished run with another config is not continued by this one.
    (first / "metrics.json").unlink()
    other = run_cv(dataset, RunConfig(model=PopularityConfig(), seed=5), 3, tmp_path, name="pop", refit=options)
    assert other not in (first, again)


def test_a_diverged_fold_stops_the_run_with_one_line(tmp_path, monkeypatch):
    """NaN scores never become a printed Recall: the fold that made them stops the run."""
    from recsys_kit.errors import DataError
    from recsys_kit.models.popularity import Popularity

    monkeypatch.setattr(Popularity, "_raw_scores", lambda self, inputs: np.full(inputs.shape, np.nan, np.float32))
    rng = np.random.default_rng(0)
    dataset = from_interactions(rng.integers(0, 30, 600), rng.integers(0, 40, 600))
    with pytest.raises(DataError, match="fold 1: the model's scores are NaN"):
        run_cv(dataset, RunConfig(model=PopularityConfig()), 3, tmp_path, name="nan",
               refit=RefitOptions(mode="none", lb_estimate=False))
    assert not (tmp_path / "nan" / "metrics.json").exists()
