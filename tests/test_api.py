"""The notebook API: README's example runs as written (so README and API cannot drift), a CVResult
holds what the run directory holds, and `import recsys_kit` stays light."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import recsys_kit as rk
from recsys_kit.errors import DataError
from recsys_kit.data.synth import make_synthetic

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    """The ```python block of README's "Python API" section."""
    section = (REPO / "README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_on_synthetic_data(tmp_path, monkeypatch):
    make_synthetic(tmp_path / "data" / "contest", users=300, items=150, interactions=9000, seed=1)
    monkeypatch.chdir(tmp_path)  # the example's relative paths: data/contest, runs/, submissions/
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)

    ease, chain, blend, csv = namespace["ease"], namespace["chain"], namespace["blend"], namespace["csv"]
    # What the result objects say is what the run directories hold.
    for result in (ease, chain, blend):
        assert isinstance(result, rk.CVResult)
        on_disk = json.loads((result.run_dir / "metrics.json").read_text())
        assert result.recall == on_disk["recall@10"]["mean"] and 0 < result.recall <= 1
        assert result.ndcg == on_disk["ndcg@10"]["mean"]
    assert ease.model == "ease" and ease.lb_estimate == ease.metrics["recall@10"]["lb_estimate"]
    assert json.loads((chain.run_dir / "config.json").read_text())["model"]["window"] == 2  # the override
    assert [m["name"] for m in blend.metrics["members"]] == [ease.name, chain.name]
    oof = namespace["oof"]
    assert oof.shape == (300, 150) and oof.dtype == np.float32
    assert np.array_equal(oof, np.load(ease.run_dir / "oof_scores.npy"))
    assert ease.test_scores().shape == oof.shape
    users, items = ease.ids()
    assert len(users) == 300 and len(items) == 150
    assert csv == Path("submissions") / f"{blend.name}.csv"
    frame = pd.read_csv(csv)
    assert len(frame) == 3000 and frame.groupby("user").item.nunique().eq(10).all()
    # Any finished run opens again as the same result.
    again = rk.open_run(ease.run_dir)
    assert again == ease and again.metrics == ease.metrics


def test_open_run_refuses_an_unfinished_directory(tmp_path):
    with pytest.raises(DataError, match="no metrics.json"):
        rk.open_run(tmp_path)


def test_cross_validate_checks_its_inputs_like_the_cli(tmp_path):
    make_synthetic(tmp_path / "data", users=60, items=40, interactions=1200, seed=3)
    with pytest.raises(DataError, match="unknown model 'nope'"):
        rk.cross_validate(tmp_path / "data", "nope", folds=2, runs_dir=tmp_path / "runs")
    with pytest.raises(DataError, match="folds"):
        rk.cross_validate(tmp_path / "data", "ease", folds=1, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # nothing written before the checks pass


def test_import_recsys_kit_loads_neither_torch_nor_optuna():
    code = "import sys, recsys_kit; print(sorted(m for m in ('torch', 'optuna') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
