"""The public leaderboard in the loop: submit, record, list, calibrate; the ledger only grows."""
import json

import pytest
from typer.testing import CliRunner

import recsys_kit as rk
from cli.main import app
from recsys_kit.data.synth import make_synthetic
from recsys_kit.submission.ledger import LEDGER, Pair, calibrate, ratio_of


def kit(*args, code=0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ledger")
    make_synthetic(root / "data", users=300, items=150, interactions=9000, seed=3)
    options = dict(folds=3, runs_dir=root / "runs", device="cpu", lb_estimate=False)
    return root, rk.cross_validate(root / "data", "ease", name="ease", **options), \
        rk.cross_validate(root / "data", "popularity", name="pop", **options)


def test_round_trip_submit_record_list_calibrate(two_runs):
    root, ease, pop = two_runs
    csv = kit("submit", ease.run_dir, "--out", root / "ease.csv").output.strip().splitlines()[-1]
    ledger = root / "runs" / LEDGER
    submitted = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert submitted[-1]["kind"] == "submit" and submitted[-1]["run"] == str(ease.run_dir.resolve())
    before = ledger.read_bytes()

    kit("lb", csv, "0.15", "--note", "first upload", "--runs-dir", root / "runs")  # found through the digest
    assert ledger.read_bytes().startswith(before)  # appended, nothing rewritten
    listing = kit("lb", "--runs-dir", root / "runs").output
    assert "0.1500" in listing and "ease" in listing and "first upload" in listing

    rows = {row["name"]: row for row in json.loads(kit("runs", "--runs-dir", root / "runs", "--json").output)}
    assert rows["ease"]["public"] == pytest.approx(0.15) and rows["pop"]["public"] is None
    # One pair: the other run's figure times that pair's ratio (OOF here: these runs have no estimate).
    expected = pop.recall * 0.15 / ease.recall
    assert rows["pop"]["calibrated"] == pytest.approx(expected) and rows["pop"]["calibration"]["pairs"] == 1
    assert rk.api.calibrated(pop) == {"value": pytest.approx(expected), "pairs": 1, "interval90": None,
                                      "family": None, "basis": "oof"}
    assert rows["ease"]["calibrated"] is None  # its own pair is left out: no other pair to rest on
    page = rk.api.report([ease, pop], root / "report.html").read_text()
    assert "<h2>Leaderboard</h2>" in page  # OOF, estimate and public score per run, plotted


@pytest.mark.parametrize("case", ["not submitted", "score above 1", "no score"])
def test_bad_input_is_one_line(two_runs, tmp_path, case):
    root, ease, _ = two_runs
    stray = tmp_path / "stray.csv"
    stray.write_text("user,item\n1,2\n")
    args = {"not submitted": [stray, "0.1", "--runs-dir", root / "runs"],
            "score above 1": [ease.run_dir, "15.2"], "no score": [ease.run_dir]}[case]
    before = (root / "runs" / LEDGER).read_bytes() if (root / "runs" / LEDGER).exists() else b""
    result = kit("lb", *args, code=2)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert ((root / "runs" / LEDGER).read_bytes() if (root / "runs" / LEDGER).exists() else b"") == before


def test_ratio_and_family():
    pairs = [Pair("a", "ease", 0.20, 0.18), Pair("b", "ease", 0.10, 0.09), Pair("c", "multidae", 0.15, 0.12)]
    ratio, interval = ratio_of(pairs[:2])
    assert ratio == pytest.approx(0.9) and interval[0] == pytest.approx(0.9) and interval[1] == pytest.approx(0.9)
    mixed = calibrate(0.3, "recvae", pairs)  # no recvae pair: every pair
    assert mixed.pairs == 3 and mixed.family is None and mixed.interval90[0] < mixed.value < mixed.interval90[1]
    own = calibrate(0.3, "multidae", pairs, run="x")  # the model's own pair alone
    assert own.family == "multidae" and own.pairs == 1 and own.value == pytest.approx(0.24)
    family = calibrate(0.3, "ease", pairs, run="x")
    assert family.family == "ease" and family.pairs == 2 and family.value == pytest.approx(0.27)
    assert calibrate(0.3, "ease", [Pair("x", "ease", 0.2, 0.1)], run="x") is None


def test_a_run_without_an_estimate_is_calibrated_on_the_pairs_oof(tmp_path, monkeypatch):
    """A stack has OOF and no estimate: its figure is scaled by public / OOF of the recorded runs,
    never by public / estimate (two different bases), and a run with an estimate by public / estimate."""
    from recsys_kit.report.run_table import add_public_scores

    def row(name, recall, estimate, public=None):
        return {"name": name, "path": str(tmp_path / name), "status": "finished", "model": name, "data": "d",
                "recall": recall, "lb_estimate": estimate, "public": public}

    rows = [row("ease", 0.16, 0.20, None), row("stack", 0.17, None), row("vae", 0.13, 0.16)]
    (tmp_path / LEDGER).write_text("")
    add_public_scores(rows, tmp_path)  # no public score recorded: nothing calibrated
    assert all(r["calibrated"] is None for r in rows)
    monkeypatch.setattr("recsys_kit.submission.ledger.public_scores",
                        lambda root: {str((tmp_path / "ease").resolve()): 0.21})
    add_public_scores(rows, tmp_path)
    by_name = {r["name"]: r for r in rows}
    assert by_name["stack"]["calibrated"] == pytest.approx(0.17 * 0.21 / 0.16)
    assert by_name["stack"]["calibration"]["basis"] == "oof"
    assert by_name["vae"]["calibrated"] == pytest.approx(0.16 * 0.21 / 0.20)
    assert by_name["vae"]["calibration"]["basis"] == "estimate"
