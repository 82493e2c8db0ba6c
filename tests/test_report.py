"""Training curves saved by `kit cv` (kept across a resume) and `kit report`'s self-contained page:
its content against the runs' own files, its refusals, and a render in headless Chromium."""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from cli.main import app
from recsys_kit.config import RunConfig, TrainConfig
from recsys_kit.runs.curves import FILE as CURVES
from recsys_kit.cv.run import run_cv
from recsys_kit.data.dataset import from_interactions
from recsys_kit.blending.ensemble import EnsembleOptions, run_ensemble
from recsys_kit.models.ease import EASEConfig
from recsys_kit.models.multidae import MultiDAEConfig
from recsys_kit.cv.refit import RefitOptions
from recsys_kit.report.page import groups_from_scores

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
runner = CliRunner()
REFIT = RefitOptions(mode="folds", lb_estimate=False)  # test scores from the fold models: no extra fit
DAE = RunConfig(model=MultiDAEConfig(hidden_dims=(16, 8)), train=TrainConfig(epochs=4, batch_size=32, patience=10))


def small_log(seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(90), 40)  # long enough rows that validation users keep a hidden tail
    items = (users % 3) * 20 + rng.integers(0, 25, len(users))  # three taste groups
    return from_interactions(users, items, rng.random(len(users)))


def kit(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


class Stop(Exception):
    pass


def test_cv_saves_curves_and_a_resumed_run_keeps_the_finished_folds(tmp_path):
    dataset = small_log()

    def stop_after_first(fold, mean):
        if fold == 0:
            raise Stop

    with pytest.raises(Stop):
        run_cv(dataset, DAE, 3, tmp_path, name="dae", refit=REFIT, on_fold_end=stop_after_first)
    first = json.loads((tmp_path / "dae" / CURVES).read_text())
    assert list(first["folds"]) == ["0"] and len(first["folds"]["0"]) == 4

    run_dir = run_cv(dataset, DAE, 3, tmp_path, name="dae", refit=REFIT)  # continues the killed run
    assert run_dir == tmp_path / "dae"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_folds"] == [0]
    curves = json.loads((run_dir / CURVES).read_text())
    assert curves["folds"]["0"] == first["folds"]["0"]  # kept as written, not trained again
    assert sorted(curves["folds"]) == ["0", "1", "2"] and "closed_form" not in curves
    for detail in metrics["folds_detail"]:
        records = curves["folds"][str(detail["fold"])]
        assert [r["epoch"] for r in records] == list(range(1, detail["model"]["epochs_run"] + 1))
        assert records[-1]["loss"] == pytest.approx(detail["model"]["final_loss"])
        assert max(r["valid_recall@10"] for r in records) == pytest.approx(detail["model"]["best_valid_recall@10"])
        seconds = [r["seconds"] for r in records]
        assert seconds == sorted(seconds) and seconds[-1] <= detail["seconds"]

    ease = run_cv(dataset, RunConfig(model=EASEConfig(l2=5.0)), 3, tmp_path, name="ease", refit=REFIT)
    closed = json.loads((ease / CURVES).read_text())
    assert closed["folds"] == {"0": [], "1": [], "2": []} and "closed form" in closed["closed_form"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A multidae run, an EASE run, their blend and a small journal study, in one runs folder."""
    root = tmp_path_factory.mktemp("report")
    runs_dir = root / "runs"
    dataset = small_log()
    dae = run_cv(dataset, DAE, 3, runs_dir, name="dae", refit=REFIT)
    ease = run_cv(dataset, RunConfig(model=EASEConfig(l2=5.0)), 3, runs_dir, name="ease", refit=REFIT)
    blend = run_ensemble([dae, ease], runs_dir, name="blend", options=EnsembleOptions(bags=2))
    study_dir = runs_dir / "study"
    study_dir.mkdir()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(study_dir / "journal.log")))
    study = optuna.create_study(study_name="study", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(lambda t: -(t.suggest_float("x", -2, 2) - 1) ** 2 + 0.01 * t.suggest_float("y", 0, 1), n_trials=8)
    out = root / "report.html"
    result = kit("report", dae, ease, blend, study_dir, "--out", out)
    assert result.stdout.strip().splitlines()[-1] == str(out)
    return {"dae": dae, "ease": ease, "blend": blend, "study": study_dir, "out": out}


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def section(page: str, heading: str) -> str:
    """The page from the <h2> that starts with `heading` to the next <h2>."""
    start = re.search(rf"<h2[^>]*>{re.escape(heading)}", page)
    assert start, f"no section {heading!r}"
    end = page.find("<h2", start.end())
    return page[start.start():end if end >= 0 else len(page)]


def cells(page: str, first: str) -> list[str]:
    """The cells after the first one of the first table row whose first cell is `first`."""
    match = re.search(rf"<tr><td>{re.escape(first)}</td>(.*?)</tr>", page)
    assert match, f"no row {first!r}"
    return re.findall(r"<td>(.*?)</td>", match.group(1))


def test_report_page_shows_every_run_from_its_files(made):
    page = made["out"].read_text()
    assert not list(made["out"].parent.glob("*.tmp"))
    assert "http://" not in page and "https://" not in page and "<script" not in page and "<link" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)
    for src in sources:  # every image is a whole PNG
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    # fold spread, activity groups, the dae's curves, blend weights, study history and importances
    assert len(sources) == 6
    for name in ("dae", "ease", "blend", "study"):
        assert f"<td>{name}</td>" in page or f"<h2>Study {name}</h2>" in page
    curves_part = section(page, "Training curves")
    assert 'id="curves"' in page and "training curves of dae" in curves_part
    assert "ease is fitted in closed form" in curves_part

    spread = section(page, "Fold spread")
    for name in ("dae", "ease", "blend"):
        recall = metrics_of(made[name])["recall@10"]
        assert cells(spread, name) == [f"{v:.4f}" for v in recall["folds"]] + [f"{recall['mean']:.4f}",
                                                                                 f"{recall['std']:.4f}"]
        assert cells(section(page, "Runs"), name)[3].startswith(f"{recall['mean']:.4f} +- ")
    curves = json.loads((made["dae"] / CURVES).read_text())
    for fold, records in curves["folds"].items():  # the curves table: fold, epochs, best epoch ...
        best = max(records, key=lambda r: r["valid_recall@10"])
        assert cells(curves_part, str(int(fold) + 1))[:3] == [str(len(records)), str(best["epoch"]),
                                                              f"{best['valid_recall@10']:.4f}"]

    group_cells = cells(section(page, "Recall@10 by user activity"), "80-100%")
    for name, cell in zip(("dae", "ease", "blend"), group_cells):
        assert cell.startswith(f"{metrics_of(made[name])['groups']['recall@10']['80-100%']['mean']:.4f} ")

    blend = metrics_of(made["blend"])
    blend_part = section(page, "Blend blend")
    for member in blend["members"]:
        assert cells(blend_part, member["name"])[1:3] == [f"{member['weight']:.4f}", f"{member['weight_half_a']:.4f}"]
    best_member = max(m["holdout_half"]["recall@10"] for m in blend["members"])
    assert f"gain {blend['holdout_half']['recall@10'] - best_member:+.4f}" in blend_part
    study_part = section(page, "Study study")
    assert "optimisation history" in study_part and "parameter importances" in study_part
    assert "8 complete" in study_part


def test_groups_from_scores_match_metrics_json(made):
    for name in ("dae", "blend"):
        groups = metrics_of(made[name])["groups"]["recall@10"]
        computed = groups_from_scores(made[name])
        for group, values in groups.items():
            assert computed[group]["users"] == values["users"]
            assert computed[group]["mean"] == pytest.approx(values["mean"])


def test_report_refuses_what_is_not_a_finished_run(made, tmp_path):
    missing = kit("report", tmp_path / "nope", "--out", tmp_path / "r.html", code=2)
    assert "nope: no such run directory" in missing.output and "kit cv" in missing.output
    (tmp_path / "empty").mkdir()
    assert "not a run directory" in kit("report", tmp_path / "empty", code=2).output
    unfinished = tmp_path / "half"
    shutil.copytree(made["ease"], unfinished)
    (unfinished / "metrics.json").unlink()
    assert "unfinished run" in kit("report", unfinished, code=2).output
    assert "listed twice" in kit("report", made["dae"], made["dae"], code=2).output
    assert "is a directory" in kit("report", made["dae"], "--out", tmp_path, code=2).output
    assert not (tmp_path / "r.html").exists()


def test_report_module_leaves_matplotlib_unloaded_until_it_draws():
    code = "import sys, cli.report, recsys_kit.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_page_renders_in_headless_chromium(made, tmp_path):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is not installed (outside CI): apt-get install chromium")
    shot = tmp_path / "shot.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1200,2000", made["out"].resolve().as_uri()],
                   check=True, capture_output=True, timeout=180)
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels.std() > 0.05  # a blank (white) page has none
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, tables and the figures' lines and bars
    assert (pixels < 0.5).all(axis=2).mean() > 0.002  # dark text and lines drawn somewhere
