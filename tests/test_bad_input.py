"""A corpus of damaged inputs across every command: each ends with exit 2 and one line starting
`error:` (no traceback, no warning, no usage box), leaves nothing behind and changes no user file.

Each case builds its damage in a fresh folder from one tiny synthetic contest and one finished
popularity run, then the whole folder is compared before and after the command.
"""
import gzip
import hashlib
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from recsys_kit import files
from recsys_kit.protocol.metrics import build_metrics

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
LATIN1 = "5,caf\u00e9,3\n".encode("latin-1")


@pytest.fixture(scope="module")
def contest(tmp_path_factory) -> Path:
    """data/ (40 users) and runs/pop (a finished 2-fold popularity run), never written to again."""
    root = tmp_path_factory.mktemp("contest")
    assert runner.invoke(app, ["synth", str(root / "data"), "--users", "40", "--items", "40",
                               "--interactions", "800", "--seed", "1"]).exit_code == 0
    result = runner.invoke(app, ["cv", "--data", str(root / "data"), "--config", "configs/popularity.toml",
                                 "--folds", "2", "--runs-dir", str(root / "runs"), "--name", "pop",
                                 "--no-lb-estimate"])
    assert result.exit_code == 0, result.output
    return root


def snapshot(root: Path) -> dict:
    """Every path under root, with a hash of each file's bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def assert_one_line_error(args: list, watched: Path, words: tuple = ()) -> str:
    before = snapshot(watched)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, [str(a) for a in args])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    assert [str(w.message) for w in caught] == []
    assert snapshot(watched) == before, "a file was left behind or changed"
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def copy_data(contest: Path, tmp: Path) -> Path:
    shutil.copytree(contest / "data", tmp / "data")
    return tmp / "data"


def copy_run(contest: Path, tmp: Path) -> Path:
    shutil.copytree(contest / "runs" / "pop", tmp / "run")
    return tmp / "run"


def cv_args(data: Path, tmp: Path, *extra, folds=2, runs_dir=None) -> list:
    return ["cv", "--data", data, "--config", REPO / "configs" / "popularity.toml", "--folds", folds,
            "--runs-dir", runs_dir or tmp / "runs", "--no-lb-estimate", *extra]


def tune_args(data: Path, tmp: Path, *extra, trials=1, runs_dir=None) -> list:
    return ["tune", "--data", data, "--config", REPO / "configs" / "multidae.toml", "--trials", trials,
            "--folds", 2, "--runs-dir", runs_dir or tmp / "runs", "--device", "cpu", *extra]


# ----------------------------------------------------------------------------- input files

def file_case(name: str, content: bytes):
    """`kit cv` on a copy of the contest whose file `name` holds `content`."""
    def build(contest, tmp):
        data = copy_data(contest, tmp)
        (data / name).write_bytes(content)
        return cv_args(data, tmp)
    return build


def ratings_case(content: bytes):
    return file_case("train_ratings.csv", content)


def appended_case(line: bytes):
    def build(contest, tmp):
        data = copy_data(contest, tmp)
        with open(data / "train_ratings.csv", "ab") as handle:
            handle.write(line)
        return cv_args(data, tmp)
    return build


def side_case(content: bytes):
    return file_case("genres.tsv", content)


def directory_case(name: str):
    def build(contest, tmp):
        data = copy_data(contest, tmp)
        (data / name).unlink()
        (data / name).mkdir()
        return cv_args(data, tmp)
    return build


def small_data_case(rows: str, folds: int = 2):
    def build(contest, tmp):
        data = tmp / "data"
        data.mkdir()
        (data / "train_ratings.csv").write_text("user,item,time\n" + rows)
        return cv_args(data, tmp, folds=folds)
    return build


def validate_case(content: bytes | None):
    def build(contest, tmp):
        csv = tmp / "sub.csv"
        if content is None:
            csv.mkdir()
        else:
            csv.write_bytes(content)
        return ["validate", csv, "--data", contest / "data"]
    return build


def good_csv(contest: Path) -> bytes:
    rows = ["user,item"]
    data = (contest / "data" / "train_ratings.csv").read_text().splitlines()[1:]
    users = sorted({int(line.split(",")[0]) for line in data})
    rows += [f"{u},{i}" for u in users for i in range(10)]
    return ("\n".join(rows) + "\n").encode()


def config_file_case(content: bytes | None):
    def build(contest, tmp):
        config = tmp / "model.toml"
        if content is None:
            config.mkdir()
        else:
            config.write_bytes(content)
        return ["cv", "--data", contest / "data", "--config", config, "--folds", 2, "--runs-dir", tmp / "runs"]
    return build


INPUT_FILES = [
    ("ratings gzip named .csv", ratings_case(gzip.compress(b"user,item,time\n1,2,3\n")), ["gzip"]),
    ("ratings binary garbage", ratings_case(bytes(range(256)) * 8), ["binary"]),
    ("ratings Latin-1 bytes", appended_case(LATIN1), ["UTF-8", "train_ratings.csv:802"]),
    ("ratings Latin-1 past the first 64 KiB", appended_case(b"1,2,3\n" * 12_000 + LATIN1),
     ["UTF-8", "train_ratings.csv:12802"]),
    ("ratings a directory", directory_case("train_ratings.csv"), ["directory"]),
    ("ratings empty", ratings_case(b""), ["empty"]),
    ("ratings header only", ratings_case(b"user,item,time\n"), ["no data rows"]),
    ("ratings id 1e23", appended_case(b"1e23,5,3\n"), ["too large"]),
    ("ratings id 24 digits", appended_case(b"100000000000000000000000,5,3\n"), ["too large"]),
    ("ratings id 1.5", appended_case(b"1.5,5,3\n"), ["integer"]),
    ("ratings negative id", appended_case(b"-4,5,3\n"), ["negative"]),
    ("ratings time inf", appended_case(b"1,5,inf\n"), ["finite"]),
    ("ratings time nan", appended_case(b"1,5,nan\n"), ["time"]),
    ("ratings time missing", appended_case(b"1,5,\n"), ["missing"]),
    ("side Latin-1 bytes", side_case(b"item\tgenre\n1\tcom\xe9die\n"), ["genres.tsv:2", "UTF-8"]),
    ("side gzip", side_case(gzip.compress(b"item\tgenre\n1\tdrama\n")), ["genres.tsv", "gzip"]),
    ("side NumPy file", side_case(b"\x93NUMPY\x01\x00" + b" " * 60), ["NumPy"]),
    ("side a directory", directory_case("genres.tsv"), ["genres.tsv", "directory"]),
    ("side bad header", side_case(b"movie\n1\n"), ["header"]),
    ("data dir is a file", lambda contest, tmp: cv_args(contest / "data" / "train_ratings.csv", tmp),
     ["not a directory"]),
    ("one user", small_data_case("1,1,1\n1,2,2\n1,3,3\n1,4,4\n"), ["1 user"]),
    ("more folds than users", small_data_case("1,1,1\n1,2,2\n1,3,3\n2,1,1\n2,2,2\n3,3,3\n", folds=5),
     ["--folds 5", "3 users"]),
    ("no user keeps enough items", small_data_case("1,1,1\n1,2,2\n2,1,1\n3,3,3\n4,1,4\n"), ["hides nothing"]),
    ("a fold without targets", small_data_case("1,1,1\n1,2,2\n1,3,3\n1,4,4\n2,1,1\n3,3,3\n4,1,4\n"),
     ["no user with a hidden target"]),
    ("config Latin-1", config_file_case(b"# caf\xe9\nseed = 1\n"), ["UTF-8"]),
    ("config gzip", config_file_case(gzip.compress(b"seed = 1\n")), ["gzip"]),
    ("config a directory", config_file_case(None), ["directory"]),
    ("config not TOML", config_file_case(b"[model\n"), ["TOML"]),
    ("config dropout 1 in the file", config_file_case(b'[model]\nname = "multidae"\ndropout = 1.0\n'),
     ["model.toml", "dropout", "[0, 1)"]),
    ("config [train] not a table", config_file_case(b'train = 5\n'), ["[train]"]),
    ("validate Latin-1", validate_case(b"user,item\n1,2\n" + LATIN1), ["UTF-8"]),
    ("validate gzip", validate_case(gzip.compress(b"user,item\n1,2\n")), ["gzip"]),
    ("validate binary", validate_case(bytes(range(256))), ["binary"]),
    ("validate a directory", validate_case(None), ["directory"]),
    ("validate missing", lambda contest, tmp: ["validate", tmp / "nope.csv", "--data", contest / "data"],
     ["not found"]),
]


# ----------------------------------------------------------------------------- options and output paths

def blocked(tmp: Path) -> Path:
    """A regular file where a folder of an output path would have to be."""
    (tmp / "afile").write_text("the user's file")
    return tmp / "afile" / "below"


OPTIONS = [
    ("cv --folds 0", lambda c, t: cv_args(c / "data", t, folds=0), ["--folds 0"]),
    ("cv --folds 1", lambda c, t: cv_args(c / "data", t, folds=1), ["--folds 1"]),
    ("cv --name with a slash", lambda c, t: cv_args(c / "data", t, "--name", "a/b"), ["--name"]),
    ("cv --name ..", lambda c, t: cv_args(c / "data", t, "--name", ".."), ["--name"]),
    ("cv --runs-dir under a file", lambda c, t: cv_args(c / "data", t, runs_dir=blocked(t)),
     ["--runs-dir", "is a file"]),
    ("cv --device", lambda c, t: cv_args(c / "data", t, "--device", "tpu"), ["--device"]),
    ("cv --refit", lambda c, t: cv_args(c / "data", t, "--refit", "some"), ["--refit"]),
    ("cv --set not key=value", lambda c, t: cv_args(c / "data", t, "--set", "epochs"), ["--set"]),
    ("cv --set below a value", lambda c, t: cv_args(c / "data", t, "--set", "seed.x=1"), ["--set"]),
    ("cv --set unknown model", lambda c, t: cv_args(c / "data", t, "--set", "model.name=gpt"), ["gpt"]),
    ("tune --trials 0", lambda c, t: tune_args(c / "data", t, trials=0), ["--trials 0"]),
    ("tune --folds 1", lambda c, t: tune_args(c / "data", t, "--folds", 1), ["--folds 1"]),
    ("tune --pruner-startup -1", lambda c, t: tune_args(c / "data", t, "--pruner-startup", -1),
     ["--pruner-startup"]),
    ("tune --study with a slash", lambda c, t: tune_args(c / "data", t, "--study", "x/y"), ["--study"]),
    ("tune --runs-dir under a file", lambda c, t: tune_args(c / "data", t, runs_dir=blocked(t)),
     ["--runs-dir", "is a file"]),
    ("tune --storage unreachable", lambda c, t: tune_args(c / "data", t, "--storage",
                                                           "postgresql://nobody:secret@127.0.0.1:9/none"),
     ["--storage", "***"]),
    ("tune --storage a directory", lambda c, t: tune_args(c / "data", t, "--storage", t), ["--storage"]),
    ("tune search range refused", lambda c, t: tune_args(c / "data", t, "--search", search_file(
        t, '"model.dropout" = { type = "float", low = 0.1, high = 1.0 }')), ["dropout", "[0, 1)"]),
    ("tune search corners refused", lambda c, t: tune_args(c / "data", t, "--search", search_file(
        t, '"holdout.n_last" = { type = "int", low = 0, high = 2 }\n'
           '"holdout.n_random" = { type = "int", low = 0, high = 2 }')), ["together", "n_last + n_random"]),
    ("tune more folds than users", lambda c, t: tune_args(c / "data", t, "--folds", 41), ["40 users"]),
    ("synth OUT_DIR under a file", lambda c, t: ["synth", blocked(t)], ["OUT_DIR", "is a file"]),
    ("synth --users 0", lambda c, t: ["synth", t / "new", "--users", 0], ["users"]),
    ("convert OUT_DIR under a file", lambda c, t: ["convert", "movielens-100k", t, blocked(t)],
     ["OUT_DIR", "is a file"]),
    ("submit --out under a file", lambda c, t: ["submit", c / "runs" / "pop", "--out", blocked(t) / "s.csv"],
     ["--out", "is a file"]),
    ("submit --out a directory", lambda c, t: ["submit", c / "runs" / "pop", "--out", t], ["directory"]),
    ("submit --out exists", lambda c, t: ["submit", c / "runs" / "pop", "--out", user_file(t)],
     ["already exists"]),
]


def search_file(tmp: Path, params: str) -> Path:
    path = tmp / "space.toml"
    path.write_text(f'model = "multidae"\n[params]\n{params}\n')
    return path


def user_file(tmp: Path) -> Path:
    path = tmp / "mine.csv"
    path.write_text("user,item\n")
    return path


# ----------------------------------------------------------------------------- config ranges (--set)

CONFIG_RANGES = [
    ("multidae", "model.dropout=1.0", "[0, 1)"),
    ("multidae", "model.dropout=-0.1", "[0, 1)"),
    ("multidae", "model.dropout=1.5", "[0, 1)"),
    ("multidae", "model.hidden_dims=[0,4]", "hidden_dims"),
    ("multidae", "model.hidden_dims=[]", "hidden_dims"),
    ("multidae", "train.epochs=0", "epochs"),
    ("multidae", "train.epochs=-3", "epochs"),
    ("multidae", "train.batch_size=0", "batch_size"),
    ("multidae", "train.lr=-0.001", "lr"),
    ("multidae", "train.lr=0", "lr"),
    ("multidae", "train.lr=nan", "lr"),
    ("multidae", "train.lr=inf", "lr"),
    ("multidae", "train.weight_decay=-1", "weight_decay"),
    ("multidae", "train.patience=0", "patience"),
    ("multidae", "train.valid_fraction=1", "valid_fraction"),
    ("multidae", "train.valid_fraction=-0.1", "valid_fraction"),
    ("multidae", "train.eval_every=0", "eval_every"),
    ("multidae", "holdout.n_last=-1", "n_last"),
    ("multidae", "holdout.n_random=-2", "n_random"),
    ("multidae", "holdout.min_input=0", "min_input"),
    ("multivae", "model.kl_cap=-1", "kl_cap"),
    ("multivae", "model.dropout=1", "[0, 1)"),
    ("multidae_side", "model.side_dim=0", "side_dim"),
    ("multidae_side", "model.hidden_dims=[8,0]", "hidden_dims"),
    ("ease", "model.l2=0", "l2"),
    ("popularity", "seed=-1", "seed"),
]


def test_a_holdout_that_hides_nothing_is_refused(contest, tmp_path):
    args = cv_args(contest / "data", tmp_path, "--set", "holdout.n_last=0", "--set", "holdout.n_random=0")
    assert_one_line_error(args, tmp_path, ("n_last + n_random",))


@pytest.mark.parametrize("model, override, words", CONFIG_RANGES, ids=[f"{m} {o}" for m, o, _ in CONFIG_RANGES])
def test_config_out_of_range(contest, tmp_path, model, override, words):
    args = ["cv", "--data", contest / "data", "--config", REPO / "configs" / f"{model}.toml", "--folds", 2,
            "--runs-dir", tmp_path / "runs", "--set", override]
    line = assert_one_line_error(args, tmp_path, (words, "with --set"))
    assert override.split("=")[0].split(".")[-1] in line


# ----------------------------------------------------------------------------- damaged run directories

def damage(name: str, how):
    def build(contest, tmp):
        run_dir = copy_run(contest, tmp)
        how(run_dir / name)
        return ["submit", run_dir, "--out", tmp / "sub.csv"]
    return build


def truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def header_only(path: Path):
    array = np.load(path, mmap_mode="r")
    header = len(path.read_bytes()) - array.nbytes
    path.write_bytes(path.read_bytes()[:header])


def garbage(path: Path):
    path.write_bytes(os.urandom(4096))


def pickled(path: Path):
    array = np.load(path)
    with open(path, "wb") as handle:
        np.save(handle, np.array([array, "x"], dtype=object), allow_pickle=True)


def raw_pickle(path: Path):
    path.write_bytes(pickle.dumps(np.load(path)))


def wrong_shape(path: Path):
    array = np.load(path)
    files.save_npy(path, array[:-1])


def as_float64(path: Path):
    files.save_npy(path, np.load(path).astype(np.float64))


def with_cells(value: float, rows=(0, 3)):
    def how(path: Path):
        array = np.load(path)
        array[list(rows), 5] = value
        files.save_npy(path, array)
    return how


def json_text(text: str):
    return lambda path: path.write_text(text)


DAMAGED_RUNS = [
    ("test scores truncated", damage("test_scores.npy", truncate), ["truncated"]),
    ("test scores header only", damage("test_scores.npy", header_only), ["bytes"]),
    ("test scores garbage", damage("test_scores.npy", garbage), ["not a NumPy"]),
    ("test scores pickled objects", damage("test_scores.npy", pickled), ["pickled"]),
    ("test scores a raw pickle", damage("test_scores.npy", raw_pickle), ["not a NumPy"]),
    ("test scores wrong shape", damage("test_scores.npy", wrong_shape), ["shape"]),
    ("test scores float64", damage("test_scores.npy", as_float64), ["dtype"]),
    ("test scores missing", damage("test_scores.npy", Path.unlink), ["missing"]),
    ("test scores NaN", damage("test_scores.npy", with_cells(np.nan)), ["NaN", "user(s)"]),
    ("test scores +inf", damage("test_scores.npy", with_cells(np.inf)), ["+inf"]),
    ("user ids missing", damage("user_ids.npy", Path.unlink), ["user_ids.npy", "missing"]),
    ("user ids pickled", damage("user_ids.npy", pickled), ["user_ids.npy", "pickled"]),
    ("user ids wrong length", damage("user_ids.npy", wrong_shape), ["user_ids.npy", "shape"]),
    ("item ids garbage", damage("item_ids.npy", garbage), ["item_ids.npy"]),
    ("data.json corrupt", damage("data.json", json_text("{\"users\": 4")), ["data.json", "JSON"]),
    ("data.json a list", damage("data.json", json_text("[1, 2]")), ["data.json"]),
    ("data.json without users", damage("data.json", json_text("{\"items\": 3}")), ["data.json", "users"]),
    ("data.json missing", damage("data.json", Path.unlink), ["data.json", "missing"]),
    ("run dir is a file", lambda c, t: ["submit", user_file(t), "--out", t / "sub.csv"], ["not a directory"]),
]


def ensemble_damage(name: str, how, words):
    def build(contest, tmp):
        good = copy_run(contest, tmp)
        bad = shutil.copytree(good, tmp / "bad")
        how(Path(bad) / name)
        return ["ensemble", good, bad, "--runs-dir", tmp / "runs", "--name", "blend"]
    return pytest.param(build, words, id=f"ensemble {name} {getattr(how, '__name__', 'damaged')}")


ENSEMBLE_RUNS = [
    ensemble_damage("oof_scores.npy", truncate, ["oof_scores.npy"]),
    ensemble_damage("oof_scores.npy", garbage, ["oof_scores.npy"]),
    ensemble_damage("test_scores.npy", wrong_shape, ["test_scores.npy", "shape"]),
    ensemble_damage("data.json", json_text("{"), ["data.json"]),
    ensemble_damage("metrics.json", json_text("not json"), ["metrics.json"]),
    ensemble_damage("user_ids.npy", Path.unlink, ["user_ids.npy"]),
    ensemble_damage("user_ids.npy", pickled, ["user_ids.npy", "pickled"]),
    ensemble_damage("folds.npy", garbage, ["folds.npy"]),
]


def ensemble_option(*extra):
    def build(contest, tmp):
        good = copy_run(contest, tmp)
        other = shutil.copytree(good, tmp / "other")
        return ["ensemble", good, other, "--runs-dir", tmp / "runs", *extra]
    return pytest.param(build, [extra[0]] if extra[0].startswith("--") else [], id=f"ensemble {' '.join(extra)}")


ENSEMBLE_RUNS += [
    ensemble_option("--name", "a/b"),
    ensemble_option("--bags", "0"),
    ensemble_option("--top-n", "0"),
    ensemble_option("--method", "luck"),
]


CASES = [pytest.param(build, words, id=name) for name, build, words in INPUT_FILES + OPTIONS + DAMAGED_RUNS]


@pytest.mark.parametrize("build, words", CASES + ENSEMBLE_RUNS)
def test_bad_input_is_one_line_and_leaves_nothing(contest, tmp_path, build, words):
    args = build(contest, tmp_path)
    assert_one_line_error(args, tmp_path, tuple(words))


def test_the_corpus_spares_the_shared_contest(contest):
    """The module's contest and run are read by every case, never written: guard the guard."""
    assert sorted(p.name for p in (contest / "runs").iterdir()) == ["pop"]
    assert not list(contest.rglob("*.tmp"))


# ----------------------------------------------------------------------------- results never hide failure

def test_nan_never_reaches_metrics_json(tmp_path):
    """A fold with no evaluated user: null with the reason, and strict JSON on disk."""
    recall = np.array([0.5, np.nan, 0.25, np.nan])
    folds = np.array([0, 1, 0, 1])
    metrics = build_metrics(recall, recall.copy(), np.array([3, 4, 5, 6]), folds, ~np.isnan(recall))
    assert metrics["recall@10"]["mean"] is None and "fold(s) 2" in metrics["recall@10"]["reason"]
    files.write_json(tmp_path / "metrics.json", {**metrics, "stray": float("nan"), "arr": np.array([np.inf])})

    def refuse(token):
        raise AssertionError(f"non-strict JSON token {token}")

    on_disk = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert on_disk["recall@10"]["folds"] == [0.375, None] and on_disk["stray"] is None and on_disk["arr"] == [None]
    empty = [g for g, v in on_disk["groups"]["recall@10"].items() if v["users"] == 0]
    assert empty and all(on_disk["groups"]["recall@10"][g]["mean"] is None for g in empty)
    assert all("reason" in on_disk["groups"]["recall@10"][g] for g in empty)


@pytest.mark.parametrize("cell", ["143.5", "1e23", "12abc", ""])
def test_validate_rejects_non_integer_ids(contest, tmp_path, cell):
    lines = good_csv(contest).decode().splitlines()
    user = lines[1].split(",")[0]
    lines[1] = f"{user},{cell}"
    csv = tmp_path / "sub.csv"
    csv.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["validate", str(csv), "--data", str(contest / "data")])
    assert result.exit_code == 1 and "non-integer id" in result.output and ":2:" in result.output, result.output


def test_submit_names_the_users_with_nan_scores(contest, tmp_path):
    run_dir = copy_run(contest, tmp_path)
    scores = np.load(run_dir / "test_scores.npy")
    user_ids = np.load(run_dir / "user_ids.npy")
    scores[[1, 7]] = np.nan
    files.save_npy(run_dir / "test_scores.npy", scores)
    line = assert_one_line_error(["submit", run_dir, "--out", tmp_path / "s.csv"], tmp_path)
    assert f"user(s) {user_ids[1]}, {user_ids[7]};" in line
