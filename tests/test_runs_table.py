"""`kit runs`: every run in one table, best first, unfinished ones listed as such, readable at 80
columns and in a pipe (names and numbers whole on one line, settings on the line under the row)."""
import fcntl
import json

import numpy as np
import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from cli.main import app
from cli.runs import render_runs
from recsys_kit.blending.ensemble import EnsembleOptions, run_ensemble
from recsys_kit.config import RunConfig
from recsys_kit.cv.refit import RefitOptions
from recsys_kit.cv.run import run_cv
from recsys_kit.data.dataset import from_interactions
from recsys_kit.models.ease import EASEConfig
from recsys_kit.models.popularity import PopularityConfig
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


# ---------------------------------------------------------------------------- reading at 80 columns

EIGHT = ["ml1m-multidae-side-tuned", "ml1m-ease", "ease-l2-1", "ease-l2-50", "pop", "pop-seed-3", "blend", "half"]


@pytest.fixture(scope="module")
def eight_runs(tmp_path_factory):
    """Eight runs on one tiny log: EASE and popularity, a blend (its held-out half), one unfinished."""
    root = tmp_path_factory.mktemp("eight") / "runs"
    dataset = small_log()
    oof_only = RefitOptions(mode="none", lb_estimate=False)
    with_test = RefitOptions(lb_estimate=False)  # a blend's members need test scores
    made = {}
    for name, model, seed, refit in (
            ("ml1m-multidae-side-tuned", EASEConfig(l2=5.0), 0, with_test), ("ml1m-ease", EASEConfig(), 0, oof_only),
            ("ease-l2-1", EASEConfig(l2=1.0), 0, oof_only), ("ease-l2-50", EASEConfig(l2=50.0), 0, oof_only),
            ("pop", PopularityConfig(), 0, with_test), ("pop-seed-3", PopularityConfig(), 3, oof_only),
            ("half", PopularityConfig(), 5, oof_only)):
        made[name] = run_cv(dataset, RunConfig(model=model, seed=seed), 3, root, name=name, refit=refit)
    run_ensemble([made["ml1m-multidae-side-tuned"], made["pop"]], root, name="blend",
                 options=EnsembleOptions(bags=2, bootstrap=50))
    (made["half"] / "metrics.json").unlink()  # killed before the end: progress.json, no metrics.json
    return root


def whole_on_a_line(needle: str, text: str) -> bool:
    return any(needle in line for line in text.splitlines())


def check_readable(text: str, rows: list, width: int) -> None:
    """Every name and number whole on one line, no line wider than the screen, no "+-"."""
    lines = text.splitlines()
    assert lines and max(cell_len(line) for line in lines) <= width, text
    assert "+-" not in text and "…" not in text
    for row in rows:
        assert whole_on_a_line(row["name"], text), (row["name"], text)
        assert whole_on_a_line((row.get("data") or "")[:7], text)
        if row["status"] != "finished":
            assert whole_on_a_line(row["status"], text) and whole_on_a_line(row["note"], text), text
            continue
        recall = f"{row['recall']:.4f} ± {row['recall_std']:.4f}"
        assert whole_on_a_line(recall, text), (recall, text)
        assert whole_on_a_line(f"{row['ndcg']:.4f}", text)
        for key, value in row["changes"].items():
            assert whole_on_a_line(f"{key}={value}", text)
    assert all(row["data"] not in text for row in rows)  # the 16-character fingerprint is cut to 7


@pytest.mark.parametrize("width", [80, 120])
def test_runs_table_reads_at_80_and_120_columns(eight_runs, width):
    rows = collect_runs(eight_runs)
    assert sorted(row["name"] for row in rows) == sorted(EIGHT)
    assert rows[-1]["name"] == "half" and rows[-1]["status"] == "unfinished"
    blend = next(row for row in rows if row["name"] == "blend")
    assert blend["holdout_half"] is not None

    direct = render_runs(rows, f"{len(rows)} run(s) in {eight_runs}", width)
    check_readable(direct, rows, width)
    assert whole_on_a_line(f"held-out half {blend['holdout_half']:.4f}", direct)
    # Settings sit on their own line under the run's row, never in a column of their own.
    assert "settings" not in direct
    lines = direct.splitlines()
    tuned = next(i for i, line in enumerate(lines) if "ml1m-multidae-side-tuned" in line)
    assert "model.l2=5.0" in lines[tuned + 1] and "ml1m-multidae-side-tuned" not in lines[tuned + 1]

    result = runner.invoke(app, ["runs", "--runs-dir", str(eight_runs)], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    check_readable(result.output, rows, width)
    assert result.output == direct  # the CLI draws the same table at the terminal's width


def test_runs_wide_puts_settings_in_a_column_one_line_per_run(eight_runs):
    rows = collect_runs(eight_runs)
    result = runner.invoke(app, ["runs", "--runs-dir", str(eight_runs), "--wide"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "settings" in result.output and "+-" not in result.output
    for row in rows:  # the whole row on one line, settings included, however wide that makes it
        line = next(line for line in result.output.splitlines() if f"│ {row['name']} " in line)
        if row["status"] == "finished":
            assert f"{row['recall']:.4f} ± {row['recall_std']:.4f}" in line
            assert all(f"{key}={value}" in line for key, value in row["changes"].items())
        else:
            assert row["status"] in line and row["note"] in line
    # --json is the rows as they are, whatever the table does.
    as_json = runner.invoke(app, ["runs", "--runs-dir", str(eight_runs), "--json"])
    assert [row["name"] for row in json.loads(as_json.stdout)] == [row["name"] for row in rows]


def test_runs_table_public_and_calibrated_columns(eight_runs):
    rows = [dict(row) for row in collect_runs(eight_runs)]
    assert "public" not in render_runs(rows, width=80).splitlines()[2]  # nobody has a public score: no column
    tuned = next(row for row in rows if row["name"] == "ml1m-multidae-side-tuned")
    pop = next(row for row in rows if row["name"] == "pop")
    tuned.update(public=0.1532, calibrated=0.15234, lb_estimate=0.1611)
    pop.update(public=None, calibrated=None, lb_estimate=0.1402)
    for width in (80, 120):
        text = render_runs(rows, width=width)
        check_readable(text, rows, width)
        header = text.splitlines()[2]
        assert "public" in header and "LB est." in header
        tuned_line = next(line for line in text.splitlines() if "ml1m-multidae-side-tuned" in line)
        assert "0.1532" in tuned_line and "0.1523 cal." in tuned_line and "0.1611" not in text
        assert "0.1402" in next(line for line in text.splitlines() if "│ pop " in line)


def test_runs_table_folds_only_a_name_wider_than_the_screen():
    long_name = "a-name-" + "x" * 90
    row = {"name": long_name, "status": "finished", "model": "ease", "data": "0123456789abcdef", "folds": 3,
           "recall": 0.161, "recall_std": 0.0013, "lb_estimate": None, "ndcg": 0.2, "wall_seconds": 12.0,
           "date": "2025-01-01 12:00", "changes": {}}
    text = render_runs([row, {**row, "name": "short"}], width=80)
    assert max(cell_len(line) for line in text.splitlines()) <= 80
    assert whole_on_a_line("short", text) and whole_on_a_line("0.1610 ± 0.0013", text)
    cells = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.count("│") > 2)
    assert long_name in cells and "…" not in text


def test_runs_shows_a_run_whose_lock_is_held_as_running(tmp_path):
    options = RefitOptions(mode="none", lb_estimate=False)
    busy = run_cv(small_log(), RunConfig(model=PopularityConfig()), 3, tmp_path, name="busy", refit=options)
    (busy / "metrics.json").unlink()  # progress.json and no metrics.json: not finished
    with open(busy / "progress.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what recsys_kit.runs.resume holds while `kit cv` works
        rows = collect_runs(tmp_path)
        assert rows[0]["status"] == "running"
        text = render_runs(rows, width=80)
        result = runner.invoke(app, ["runs", "--runs-dir", str(tmp_path)], env={"COLUMNS": "80"})
        fcntl.flock(lock, fcntl.LOCK_UN)
    for output in (text, result.output):
        line = next(line for line in output.splitlines() if "│ busy " in line)
        assert "running" in line and "unfinished" not in output
        assert whole_on_a_line(rows[0]["note"], output)
    assert result.exit_code == 0
    assert "unfinished" in render_runs(collect_runs(tmp_path), width=80)  # the lock let go: it can be resumed
