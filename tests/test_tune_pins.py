"""`kit tune --set key=value` pins that field (it leaves the search space, said in one line), and the
trial in flight shows its epochs as they pass, not only when a fold ends."""
import json

import optuna
import pytest
from typer.testing import CliRunner

import cli.tune
from cli.common import FitRow
from cli.main import app
from recsys_kit.config import from_dict, load_config
from recsys_kit.errors import DataError
from recsys_kit.models import REGISTRY  # noqa: F401  (registers the model configs from_dict builds)
from recsys_kit.tune.search_space import load_search_space, pinned_values
from recsys_kit.data.synth import make_synthetic

SEARCH = """model = "multidae"
[params]
"model.dropout" = { type = "float", low = 0.1, high = 0.8 }
"model.hidden_dims[0]" = { type = "int", low = 8, high = 32 }
"model.hidden_dims[-1]" = { type = "int", low = 4, high = 8 }
"train.epochs" = { type = "int", low = 20, high = 40 }
"""
BASE = """seed = 3
[model]
name = "multidae"
hidden_dims = [16, 8]
[train]
batch_size = 64
"""


@pytest.fixture
def search(tmp_path):
    path = tmp_path / "search.toml"
    path.write_text(SEARCH)
    return path


def test_a_set_field_leaves_the_space_and_keeps_its_value(search):
    overrides = ["train.epochs=3", "train.lr=0.01"]  # train.lr is set but not searched: nothing to pin
    base = load_config(None, overrides)
    space = load_search_space(search, base, pinned=overrides)
    assert [p.key for p in space.params] == ["model.dropout", "model.hidden_dims[0]", "model.hidden_dims[-1]"]
    assert space.pinned == ("train.epochs",)
    assert pinned_values(space, base) == {"train.epochs": 3}
    # Unpinned, the same file searches the epochs.
    assert "train.epochs" in [p.key for p in load_search_space(search, base).params]


def test_a_list_field_set_whole_pins_every_searched_element(search):
    overrides = ["model.hidden_dims=[24, 6]"]
    base = load_config(None, overrides)
    space = load_search_space(search, base, pinned=overrides)
    assert space.pinned == ("model.hidden_dims[0]", "model.hidden_dims[-1]")
    assert pinned_values(space, base) == {"model.hidden_dims[0]": 24, "model.hidden_dims[-1]": 6}


def test_pinning_every_parameter_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "lr.toml"
    path.write_text('[params]\n"train.lr" = { type = "float", low = 1e-4, high = 1e-2, log = true }\n')
    base = from_dict({"model": {"name": "multidae"}, "train": {"lr": 0.003}})
    with pytest.raises(DataError, match="nothing is left to search.*kit cv"):
        load_search_space(path, base, pinned=["train.lr=0.003"])


class RecordingFitRow(FitRow):
    """The fit row, with a log of what it was asked to draw."""
    log: list = []

    def start(self, what, epochs):
        RecordingFitRow.log.append(("start", what, epochs))
        super().start(what, epochs)

    def epoch(self, event):
        RecordingFitRow.log.append(("epoch", event["epoch"]))
        super().epoch(event)

    def finish(self):
        RecordingFitRow.log.append(("finish",))
        super().finish()


def test_tune_pins_set_epochs_and_shows_each_epoch(tmp_path, search, monkeypatch):
    # The issue's own case: the search file ranges train.epochs over 20..40, --set asks for 2.
    make_synthetic(tmp_path / "data", users=120, items=60, interactions=2400, seed=4)
    (tmp_path / "base.toml").write_text(BASE)
    monkeypatch.setattr(cli.tune, "FitRow", RecordingFitRow)
    RecordingFitRow.log = []
    result = CliRunner().invoke(app, [
        "tune", "--data", str(tmp_path / "data"), "--config", str(tmp_path / "base.toml"), "--search", str(search),
        "--trials", "2", "--folds", "2", "--study", "pins", "--runs-dir", str(tmp_path / "runs"),
        "--device", "cpu", "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "3 parameters from" in output
    assert "pinned by --set, not searched: train.epochs = 2" in output

    study = optuna.load_study(study_name="pins", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "runs" / "pins" / "journal.log"))))
    assert len(study.trials) == 2
    for trial in study.trials:
        assert "train.epochs" not in trial.params and "model.dropout" in trial.params
        config = json.loads((tmp_path / "runs" / "pins" / "trials" / f"trial-{trial.number:04d}" /
                             "config.json").read_text())
        assert config["train"]["epochs"] == 2

    # Every fold of every trial drew its epochs 1, 2 before the fold ended.
    log = RecordingFitRow.log
    starts = [entry for entry in log if entry[0] == "start"]
    assert starts == [("start", f"trial {t} fold {f}", 2) for t in (0, 1) for f in (1, 2)]
    for index, entry in enumerate(log):
        if entry[0] == "start":
            assert log[index + 1:index + 4] == [("epoch", 1), ("epoch", 2), ("finish",)]
