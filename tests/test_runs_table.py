"""`kit runs`: every run in one table, best first, unfinished ones listed as such."""
import json

import numpy as np
from typer.testing import CliRunner

from cli.main import app
from recsys_kit.config import RunConfig
from recsys_kit.cv.run import run_cv
from recsys_kit.data.dataset import from_interactions
from recsys_kit.models.ease import EASEConfig
from recsys_kit.models.popularity import PopularityConfig
from recsys_kit.cv.refit import RefitOptions
from recsys_kit.report.run_table import collect_runs

runner = CliRunner()


def small_log(seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(60), 15)
    items = (users % 3) * 10 + rng.integers(0, 12, len(users))  # three taste groups: EASE beats popularity
    return from_interactions(users, items, rng.random(len(users)))


def test_runs_lists_best_first_with_settings_and_unfinished_runs(tmp_path):
    dataset = small_log()
    options = RefitOptions(mode="none", lb_estimate=False)
    long_name = "ease-with-a-rather-long-name-that-a-table-might-cut-" + "x" * 30
    run_cv(dataset, RunConfig(model=PopularityConfig()), 3, tmp_path, name="pop", refit=options)
    run_cv(dataset, RunConfig(model=EASEConfig(l2=5.0)), 3, tmp_path, name=long_name, refit=options)
    broken = run_cv(dataset, RunConfig(model=PopularityConfig(), seed=3), 3, tmp_path, name="half", refit=options)
    (broken / "metrics.json").unlink()

    rows = collect_runs(tmp_path)
    assert [row["name"] for row in rows] == [long_name, "pop", "half"]
    assert rows[0]["recall"] > rows[1]["recall"]
    assert rows[0]["changes"] == {"model.l2": 5.0} and rows[1]["changes"] == {}
    assert rows[2]["status"] == "unfinished" and "3 fold(s) done" in rows[2]["note"]

    result = runner.invoke(app, ["runs", "--runs-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert [row["name"] for row in json.loads(result.stdout)] == [long_name, "pop", "half"]
    table = runner.invoke(app, ["runs", "--runs-dir", str(tmp_path)], env={"COLUMNS": "120"})
    assert table.exit_code == 0
    # A long name folds over lines of its cell but is whole, never cut with "…".
    run_cells = "".join(line.split("│")[1].strip() for line in table.output.splitlines() if line.count("│") > 2)
    assert long_name in run_cells and "…" not in table.output and "unfinished" in table.output
    assert "model.l2" in table.output


def test_runs_filters_by_data_and_refuses_bad_options(tmp_path):
    options = RefitOptions(mode="none", lb_estimate=False)
    run_cv(small_log(0), RunConfig(model=PopularityConfig()), 3, tmp_path / "runs", name="a", refit=options)
    run_cv(small_log(1), RunConfig(model=PopularityConfig()), 3, tmp_path / "runs", name="b", refit=options)
    wanted = small_log(1).fingerprint()
    assert [row["name"] for row in collect_runs(tmp_path / "runs", wanted)] == ["b"]
    bad = runner.invoke(app, ["runs", "--runs-dir", str(tmp_path / "runs"), "--sort", "luck"])
    assert bad.exit_code == 2 and bad.output.strip().startswith("error:")
    missing = runner.invoke(app, ["runs", "--runs-dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and len(missing.output.strip().splitlines()) == 1
