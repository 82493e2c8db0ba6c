"""`kit tune`: search files, a pruned study whose best config `kit cv` takes, and many workers
(journal file, sqlite and PostgreSQL) sharing one study, including workers started at the same
moment on a new storage and a worker killed mid-trial."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from cli.main import app
from recsys_kit.config import from_dict, load_config
from recsys_kit.errors import DataError
from recsys_kit.data.synth import make_synthetic
from recsys_kit.tune.study import _check_study, load_search_space
from recsys_kit.tune.storage import _with_driver

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

# Small enough for 2 CI cores: 2 epochs of a 16-8 autoencoder, a trial takes about a second.
BASE = """seed = 3
[model]
name = "multidae"
hidden_dims = [16, 8]
dropout = 0.5
[train]
epochs = 2
batch_size = 64
"""
# lr over six decades: the low end learns nothing in two epochs, so the pruner has work to do.
SEARCH = """model = "multidae"
[params]
"model.dropout" = { type = "float", low = 0.1, high = 0.8 }
"model.hidden_dims[-1]" = { type = "int", low = 4, high = 16, log = true }
"train.lr" = { type = "float", low = 1e-7, high = 1e-1, log = true }
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    make_synthetic(root / "data", users=150, items=80, interactions=3000, seed=5)
    (root / "base.toml").write_text(BASE)
    (root / "search.toml").write_text(SEARCH)
    return root


def tune_args(root: Path, trials: int, study: str, *extra) -> list[str]:
    return ["tune", "--data", str(root / "data"), "--config", str(root / "base.toml"),
            "--search", str(root / "search.toml"), "--trials", str(trials), "--folds", "2",
            "--study", study, "--runs-dir", str(root / "runs"), "--device", "cpu",
            "--pruner-startup", "1", *extra]


def kit(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def worker(root: Path, trials: int, study: str, *extra, log: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    out = open(root / f"{log}.log", "w")
    # A test run started in the background of a script inherits SIGINT ignored, and so would
    # every worker: give the workers Ctrl-C's default so the test's SIGINT reaches them.
    return subprocess.Popen([sys.executable, "-m", "cli.main", *tune_args(root, trials, study, *extra)],
                            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(proc: subprocess.Popen, root: Path, log: str, code: int = 0, timeout: float = 150) -> None:
    assert proc.wait(timeout=timeout) == code, (root / f"{log}.log").read_text()[-3000:]


def journal_study(root: Path, study: str) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = root / "runs" / study / "journal.log"
    return optuna.load_study(study_name=study, storage=JournalStorage(JournalFileBackend(str(path))))


def assert_complete(study: optuna.Study, n: int) -> list:
    """n finished trials, no parameter set finished twice, and nothing else but lost races/re-runs."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n, [(t.number, t.state.name) for t in trials]
    keys = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(keys)) == n, "a parameter set was run twice"
    retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    for t in trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            assert t.state == TrialState.FAIL and (t.user_attrs.get("surplus") or t.number in retried), t
    return finished


# ----------------------------------------------------------------------------- search files

def write(tmp_path, text):
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, words", [
    ('[params]\n"model.droput" = { type = "float", low = 0.1, high = 0.5 }', ["model.droput", "dropout"]),
    ('[params]\n"model.dropout" = { type = "normal", low = 0.1, high = 0.5 }', ["model.dropout", "categorical"]),
    ('[params]\n"model.dropout" = { type = "float", low = 0.1, hgh = 0.5 }', ["hgh", "allowed"]),
    ('[params]\n"model.hidden_dims" = { type = "int", low = 8, high = 64 }', ["hidden_dims[0]", "hidden_dims[-1]"]),
    ('[params]\n"model.hidden_dims[2]" = { type = "int", low = 8, high = 64 }', ["index 2", "-1"]),
    ('[params]\n"train.epochs" = { type = "float", low = 1, high = 5 }', ["train.epochs", 'type = "int"']),
    ('[params]\n"train.lr" = { type = "float", low = 0, high = 0.1, log = true }', ["train.lr", "low > 0"]),
    ('[params]\n"train.lr" = { type = "float", low = 0.1, high = 0.01 }', ["train.lr", "swap"]),
    ('[params]\n"model.hidden_dims[0]" = { type = "categorical", choices = ["wide"] }', ["hidden_dims[0]", "'wide'"]),
    ('[params]\n"model.hidden_dims[0]" = { type = "int", low = 8, high = 9 }\n'
     '"model.hidden_dims[-2]" = { type = "int", low = 8, high = 9 }', ["same value"]),
    ('model = "ease"\n[params]\n"model.l2" = { type = "float", low = 1, high = 9 }', ["ease", "--search"]),
    ('[param]\n"train.lr" = { type = "float", low = 0.1, high = 0.2 }', ["param", "[params]"]),
    ('[params]\nseed = { type = "int", low = 1, high = 9 }', ["'seed'", "model, train or holdout"]),
    # Ranges a config refuses: a bound alone, or bounds only together (the corners are probed).
    ('[params]\n"model.dropout" = { type = "float", low = 0.1, high = 1.0 }', ["model.dropout", "[0, 1)"]),
    ('[params]\n"train.epochs" = { type = "int", low = 0, high = 10 }', ["train.epochs", ">= 1"]),
    ('[params]\n"holdout.n_last" = { type = "int", low = 0, high = 2 }\n'
     '"holdout.n_random" = { type = "int", low = 0, high = 3 }', ["together", "n_last + n_random"]),
])
def test_bad_search_file_names_file_parameter_and_fix(tmp_path, text, words):
    base = from_dict({"model": {"name": "multidae"}})
    path = write(tmp_path, text)
    with pytest.raises(DataError) as err:
        load_search_space(path, base)
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message, message


def test_search_space_applies_list_elements_through_from_dict(tmp_path):
    base = from_dict({"model": {"name": "multidae", "hidden_dims": [600, 200]}})
    path = write(tmp_path, '[params]\n"model.hidden_dims[0]" = { type = "categorical", choices = [300, 900] }\n'
                           '"model.hidden_dims[-1]" = { type = "int", low = 32, high = 256, log = true }\n'
                           '"train.weight_decay" = { type = "float", low = 1e-6, high = 1e-2, log = true }')
    space = load_search_space(path, base)
    config = space.apply(base, {"model.hidden_dims[0]": 900, "model.hidden_dims[-1]": 64,
                                "train.weight_decay": 1e-4})
    assert config.model.hidden_dims == (900, 64) and config.train.weight_decay == 1e-4
    assert base.model.hidden_dims == (600, 200)  # the base is never touched


def test_shipped_search_files_fit_their_models():
    from recsys_kit.models import REGISTRY

    files = {path.stem: path for path in (REPO / "configs" / "search").glob("*.toml")}
    assert {"multidae", "multidae_side", "ease", "multivae"} <= set(files)
    for model, path in files.items():
        if model in REGISTRY:  # each default config must accept every bound of its space
            space = load_search_space(path, from_dict({"model": {"name": model}}))
            assert space.params
    keys = [p.key for p in load_search_space(files["multidae"], from_dict({})).params]
    assert {"model.dropout", "model.hidden_dims[-1]", "model.hidden_dims[0]", "train.lr",
            "train.weight_decay", "train.epochs"} <= set(keys)


def test_dropping_trial_scores_never_leaves_the_study_directory(tmp_path):
    from recsys_kit.tune.study import _drop_scores

    study_dir = tmp_path / "runs" / "study"
    inside, outside = study_dir / "trials" / "trial-0000", tmp_path / "elsewhere" / "trial-0000"
    for run_dir in (inside, outside):
        run_dir.mkdir(parents=True)
        for name in ("oof_scores.npy", "test_scores.npy", "metrics.json"):
            (run_dir / name).write_text("x")
    # A run_dir read from a shared storage may point anywhere: another host's path, a stale record.
    for stored in (outside, tmp_path / "runs" / "study" / "trials" / ".." / ".." / ".." / "elsewhere" / "trial-0000",
                   study_dir, tmp_path):
        _drop_scores(str(stored), study_dir)
    assert sorted(p.name for p in outside.iterdir()) == ["metrics.json", "oof_scores.npy", "test_scores.npy"]
    _drop_scores(str(inside), study_dir)
    assert [p.name for p in inside.iterdir()] == ["metrics.json"]


# ----------------------------------------------------------------------------- one worker

def test_study_prunes_resumes_and_best_config_runs_in_cv(setup):
    root = setup
    result = kit(*tune_args(root, 6, "solo"))
    study_dir = root / "runs" / "solo"
    best = study_dir / "best.toml"
    assert result.stdout.strip().splitlines()[-1] == str(best)
    study = journal_study(root, "solo")
    finished = assert_complete(study, 6)
    assert sum(t.state == TrialState.PRUNED for t in finished) >= 1, "the hopeless learning rates were not pruned"
    assert (study_dir / "folds.npy").exists() and (study_dir / "trials.csv").exists()
    assert len(list((study_dir / "trials").iterdir())) == 6
    assert not list(study_dir.rglob("*_scores.npy*")), "trial score matrices are dropped by default"
    assert "matplotlib" in result.output or (study_dir / "history.png").exists()

    # The best file is a complete config with the study seed (same holdout), and `kit cv` takes it.
    config = load_config(best)
    assert config.seed == 3 and config.model.hidden_dims[0] == 16
    assert config.train.lr == study.best_trial.params["train.lr"]
    cv = kit("cv", "--data", root / "data", "--config", best, "--folds", 2, "--runs-dir", root / "cv",
             "--name", "best", "--device", "cpu")
    assert cv.stdout.strip().splitlines()[-1] == str(root / "cv" / "best")
    # best.toml carries the trial's fitting seed, so `kit cv` reproduces the trial's figure exactly.
    assert config.train.fit_seed == study.best_trial.user_attrs["fit_seed"] >= 0
    reproduced = json.loads((root / "cv" / "best" / "metrics.json").read_text())["recall@10"]["mean"]
    assert reproduced == pytest.approx(study.best_value, abs=1e-9)

    # The same command again: the same study, nothing new to run, the same best printed last.
    again = kit(*tune_args(root, 6, "solo"))
    assert again.stdout.strip().splitlines()[-1] == str(best)
    assert len(journal_study(root, "solo").trials) == len(study.trials)
    # A larger budget continues it; another data set is refused with a reason.
    kit(*tune_args(root, 7, "solo"))
    assert_complete(journal_study(root, "solo"), 7)
    other = kit("tune", "--data", root / "data", "--config", "configs/popularity.toml", "--trials", 1,
                "--study", "solo", "--runs-dir", root / "runs", "--search", root / "search.toml", code=2)
    assert "multidae" in other.output


def test_study_from_an_older_kit_resumes_but_a_changed_config_is_refused():
    """A config key added since the study began (e.g. train.fit_seed) takes its default, so an
    upgrade does not orphan a study; a real change of the base config is still refused."""
    base = from_dict({"model": {"name": "multidae"}, "train": {"lr": 0.001}})
    old_config = base.to_dict()
    del old_config["train"]["fit_seed"]
    identity = {"model": "multidae", "seed": 0, "config": base.to_dict()}
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("recsys_kit", {"model": "multidae", "seed": 0, "config": old_config})
    study.set_user_attr("search_space", {})
    _check_study(study, identity, {}, emit=lambda *a, **k: None)  # resumes
    changed = from_dict({"model": {"name": "multidae"}, "train": {"lr": 0.01}})
    with pytest.raises(DataError, match="different config"):
        _check_study(study, {**identity, "config": changed.to_dict()}, {}, emit=lambda *a, **k: None)


# ----------------------------------------------------------------------------- many workers

def test_two_workers_share_a_journal_study(setup):
    root = setup
    procs = [worker(root, 6, "pair", log=f"pair-{i}") for i in range(2)]
    for i, proc in enumerate(procs):
        finish(proc, root, f"pair-{i}")
    assert_complete(journal_study(root, "pair"), 6)
    assert (root / "runs" / "pair" / "best.toml").exists()


def postgres_url() -> str:
    url = os.environ.get("RECSYS_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("RECSYS_TEST_POSTGRES is not set: .ci/run starts PostgreSQL and exports it")
        pytest.skip("RECSYS_TEST_POSTGRES is not set (outside CI)")
    return url


def test_two_workers_share_a_postgres_study(setup):
    url = postgres_url()
    root, name = setup, f"pg-{uuid.uuid4().hex[:8]}"
    procs = [worker(root, 5, name, "--storage", url, log=f"pg-{i}") for i in range(2)]
    try:
        for i, proc in enumerate(procs):
            finish(proc, root, f"pg-{i}")
        storage = optuna.storages.RDBStorage(_with_driver(url))
        assert_complete(optuna.load_study(study_name=name, storage=storage), 5)
        assert (root / "runs" / name / "best.toml").exists()
        assert not (root / "runs" / name / "journal.log").exists()
    finally:
        for proc in procs:
            proc.kill()
        try:
            optuna.delete_study(study_name=name, storage=_with_driver(url))
        except KeyError:
            pass


# Opens the study as `kit tune` does, at a given moment: started together on a new storage, every
# worker races to create the same tables, version rows and study row.
OPEN_AT = """
import sys, time
from recsys_kit.tune.storage import open_storage, open_study
url, study, moment = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, moment - time.time()))
storage, where = open_storage(url, None, 60, 180, None)
assert open_study(storage, where, study, None, None).study_name == study
"""


def open_together(url: str, study: str, workers: int = 4) -> None:
    moment = time.time() + 4  # every process has imported optuna by then (1.5 s each on 2 busy cores)
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, url, study, str(moment)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(workers)]
    outputs = [proc.communicate(timeout=120)[0].decode() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * workers, "\n".join(outputs)[-3000:]


def test_workers_started_together_on_a_new_sqlite_storage_all_run(setup, tmp_path):
    # Four workers on a fresh database file: without the retries about two workers in three failed
    # with `table studies already exists` or a duplicate alembic version row.
    open_together(f"sqlite:///{tmp_path / 'new.db'}", "together")
    # The command itself: two `kit tune` workers started together on a new sqlite file both finish.
    url = f"sqlite:///{tmp_path / 'pair.db'}"
    procs = [worker(setup, 3, "sqlite-pair", "--storage", url, log=f"sqlite-{i}") for i in range(2)]
    for i, proc in enumerate(procs):
        finish(proc, setup, f"sqlite-{i}")
    assert_complete(optuna.load_study(study_name="sqlite-pair", storage=url), 3)


@contextlib.contextmanager
def new_postgres_schema(url: str):
    """A new, empty storage on the CI server: a schema of its own, first on the search path."""
    import sqlalchemy

    schema = f"rk_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(_with_driver(url))
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def test_workers_started_together_on_a_new_postgres_storage_all_run(setup):
    url = postgres_url()
    with new_postgres_schema(url) as fresh:
        open_together(fresh, "together")
    with new_postgres_schema(url) as fresh:
        procs = [worker(setup, 3, "pg-new-pair", "--storage", fresh, log=f"pg-new-{i}") for i in range(2)]
        try:
            for i, proc in enumerate(procs):
                finish(proc, setup, f"pg-new-{i}")
            storage = optuna.storages.RDBStorage(_with_driver(fresh))
            assert_complete(optuna.load_study(study_name="pg-new-pair", storage=storage), 3)
            storage.engine.dispose()
        finally:
            for proc in procs:
                proc.kill()


def wait_mid_trial(proc, root: Path, study: str, log: str, after: int) -> int:
    """Poll the journal until the worker is inside a fresh (not re-run) trial numbered >= after."""
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, (root / f"{log}.log").read_text()[-3000:]
        if (root / "runs" / study / "journal.log").exists():
            try:
                running = [t for t in journal_study(root, study).get_trials(states=(TrialState.RUNNING,))
                           if "run_dir" in t.user_attrs and "retry_of" not in t.user_attrs
                           and t.number >= after]
            except (KeyError, ValueError):  # the study is still being created
                running = []
            if running:
                return running[0].number
        time.sleep(0.1)
    raise AssertionError("the worker never started a trial")


def test_interrupted_and_killed_worker_resume_without_loss_or_duplicates(setup):
    root, study = setup, "crash"
    # Long, never pruned trials (no early stop either), so the signals land inside one.
    slow = ("--set", "train.epochs=150", "--set", "train.patience=1000", "--pruner-startup", "100")
    # Ctrl-C: the trial in flight fails, its parameters are queued for the resume; exit 130.
    proc = worker(root, 4, study, *slow, log="crash-0")
    interrupted = wait_mid_trial(proc, root, study, "crash-0", after=1)
    proc.send_signal(signal.SIGINT)
    finish(proc, root, "crash-0", code=130)
    # SIGKILL: the trial stays RUNNING in the journal; the next worker sees its pid is gone.
    proc = worker(root, 4, study, *slow, log="crash-1")
    killed = wait_mid_trial(proc, root, study, "crash-1", after=interrupted + 1)
    proc.kill()
    proc.wait()
    assert journal_study(root, study).trials[killed].state == TrialState.RUNNING
    proc = worker(root, 4, study, *slow, log="crash-2")
    finish(proc, root, "crash-2")

    trials = journal_study(root, study).trials
    finished = assert_complete(journal_study(root, study), 4)
    assert trials[interrupted].state == trials[killed].state == TrialState.FAIL
    for lost in [t for t in trials if t.state == TrialState.FAIL]:
        reruns = [t for t in finished if t.user_attrs.get("retry_of") == lost.number]
        assert len(reruns) == 1 and reruns[0].params == lost.params, lost


@pytest.mark.filterwarnings("ignore:Heartbeat of storage", "ignore::optuna.exceptions.ExperimentalWarning")
def test_heartbeat_requeues_the_trial_of_a_worker_lost_on_another_host(setup, tmp_path):
    from recsys_kit.data.load import load_dataset
    from recsys_kit.tune.study import TuneOptions, run_tune

    url = f"sqlite:///{tmp_path / 'study.db'}"
    base = load_config(setup / "base.toml")
    space = load_search_space(setup / "search.toml", base)
    # Another host's worker asked a trial, sent one heartbeat and vanished.
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=1)
    ghost = optuna.create_study(study_name="hb", storage=storage, direction="maximize").ask()
    params = {p.key: p.suggest(ghost) for p in space.params}
    ghost.set_user_attr("host", "elsewhere")
    ghost.set_user_attr("pid", 1)
    storage.record_heartbeat(ghost._trial_id)
    time.sleep(2.5)
    options = TuneOptions(trials=2, folds=2, study="hb", storage=url, device="cpu", heartbeat_interval=1,
                          grace_period=1, pruner_startup=100)
    result = run_tune(load_dataset(setup / "data"), base, space, options, tmp_path / "runs")
    study = optuna.load_study(study_name="hb", storage=url)
    finished = assert_complete(study, 2)
    assert study.trials[ghost.number].state == TrialState.FAIL
    assert [t.params for t in finished if t.user_attrs.get("retry_of") == ghost.number] == [params]
    assert result.best_config.exists()
