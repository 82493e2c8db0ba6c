"""`kit --help`, `kit validate` and `kit submit` start without torch or optuna (seconds of imports that
those commands never use); `--version` and shell completion are there."""
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from recsys_kit.config import load_config
from recsys_kit.cv.run import run_cv
from recsys_kit.data.load import load_dataset
from recsys_kit.cv.refit import RefitOptions
from recsys_kit.data.synth import make_synthetic

REPO = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: this test process has torch already (conftest imports it).
LIGHT_START = """
import json, sys
from typer.testing import CliRunner
import cli.main

runner = CliRunner()
codes = {name: runner.invoke(cli.main.app, args).exit_code for name, args in json.loads(sys.argv[1]).items()}
print(json.dumps({"codes": codes, "heavy": sorted(m for m in ("torch", "optuna") if m in sys.modules)}))
"""


@pytest.fixture(scope="module")
def run_and_csv(tmp_path_factory):
    root = tmp_path_factory.mktemp("start")
    make_synthetic(root / "data", users=120, items=60, interactions=2400, seed=2)
    config = load_config(REPO / "configs" / "popularity.toml")
    run_dir = run_cv(load_dataset(root / "data"), config, 2, root / "runs", name="pop",
                     refit=RefitOptions(lb_estimate=False))
    return root, run_dir


def test_help_validate_and_submit_never_import_torch_or_optuna(run_and_csv):
    root, run_dir = run_and_csv
    commands = {"help": ["--help"], "submit_help": ["submit", "--help"],
                "submit": ["submit", str(run_dir), "--out", str(root / "sub.csv")],
                "validate": ["validate", str(root / "sub.csv"), "--data", str(root / "data")]}
    done = subprocess.run([sys.executable, "-c", LIGHT_START, json.dumps(commands)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == {name: 0 for name in commands}  # each command ran, and succeeded
    assert result["heavy"] == []


def test_version_and_completion():
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"recsys-kit {version('recsys-kit')}"
    assert "--show-completion" in runner.invoke(app, ["--help"]).stdout


def test_ensemble_default_normalisation_is_the_library_default():
    # cli/ensemble.py spells the default out so that its help does not import torch.
    from cli.ensemble import DEFAULT_NORMALIZE as cli_default
    from recsys_kit.blending.ensemble import DEFAULT_NORMALIZE

    assert cli_default == DEFAULT_NORMALIZE


def test_every_argument_is_upper_case_and_every_option_kebab_case():
    # One casing in every command's help: RUN_DIR-style arguments, --runs-dir-style options.
    import typer.main

    group = typer.main.get_group(app)
    for name, command in group.commands.items():
        for param in command.params:
            if param.param_type_name == "argument":
                assert param.metavar and param.metavar == param.metavar.upper(), (name, param.name)
            else:
                for opt in param.opts + param.secondary_opts:
                    assert opt == opt.lower() and "_" not in opt, (name, opt)


# `kit cv` in a fresh interpreter (no torch yet): the forked child parses and draws the holdout.
CV_START = """
import json, os, sys
import recsys_kit.protocol.prefetch as prefetch
started = []
real_start = prefetch.start
def spy(*args):
    pid = real_start(*args)
    started.append(pid is not None)
    return pid
prefetch.start = spy
from typer.testing import CliRunner
import cli.main
result = CliRunner().invoke(cli.main.app, json.loads(sys.argv[1]))
print(json.dumps({"code": result.exit_code, "forked": started, "output": result.output[-400:]}))
"""


def kit_cv_fresh(args: list[str], cache: Path | str) -> dict:
    env = {**__import__("os").environ, "RECSYS_KIT_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", CV_START, json.dumps(args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_first_kit_cv_parses_in_a_forked_child_and_gives_the_same_run(run_and_csv, tmp_path):
    root, _ = run_and_csv
    common = ["cv", "--data", str(root / "data"), "--config", str(REPO / "configs" / "popularity.toml"),
              "--folds", "2", "--runs-dir", str(tmp_path / "runs"), "--no-lb-estimate"]
    first = kit_cv_fresh([*common, "--name", "forked"], tmp_path / "cache")
    assert first["code"] == 0 and first["forked"] == [True], first
    # The child left the parsed data set and the holdout's draws in the cache, where the run found them.
    assert len(list((tmp_path / "cache").glob("dataset-*.npz"))) == 1
    assert list((tmp_path / "cache").glob("holdout-*.npz"))
    off = kit_cv_fresh([*common, "--name", "plain"], "off")  # no cache, so no child: parsed in the run
    assert off["code"] == 0 and off["forked"] == [False], off
    runs = tmp_path / "runs"
    for name in ("oof_scores.npy", "test_scores.npy", "folds.npy"):
        assert (runs / "forked" / name).read_bytes() == (runs / "plain" / name).read_bytes()
    # A bad option is said at once (the child is stopped), a bad file by the parent's own parse.
    bad = kit_cv_fresh([*common, "--name", "bad", "--folds", "1"], tmp_path / "cache-2")
    assert bad["code"] == 2 and "folds" in bad["output"], bad
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "train_ratings.csv").write_text("user,item,time\n1,2,3\n1,x,4\n")
    broken = kit_cv_fresh([*common[:1], "--data", str(tmp_path / "broken"), *common[3:], "--name", "broken"],
                          tmp_path / "cache-3")
    assert broken["code"] == 2 and "train_ratings.csv:3" in broken["output"], broken
