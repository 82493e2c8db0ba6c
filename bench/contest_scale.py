"""Contest scale in one command: every figure next to a reference measured in the same run.

    python bench/contest_scale.py [--data DIR] [--device auto|cpu|cuda] [--epochs 3] [--quick]
                                  [--sections data ease epochs scoring start cv] [--members ...]
                                  [--cv-models multidae ...]
                                  [--precisions auto] [--out JSON]

Without --data it makes (or reuses) `kit synth --users 31360 --items 6807 --interactions 5154471`
under the temp folder (--quick: a 3,000-user set, for a smoke run). Sections, in order:
  data     load_dataset, holdout, folds and fold 0's split   vs  a bare pandas.read_csv of the log
  ease     EASE.fit per solve precision (float64, float32), its top-10 overlap and Recall@10 on fold 0
           vs  building the same float64 Gram matrix and numpy.linalg.inv of it (--ease-l2 500 1: the
           overlap at further l2 values too; a small l2 is float32's hard case)
  epochs   seconds per epoch of every torch member of REGISTRY (--members: some; configs/<name>.toml)
           on fold 0's fitting users, per --precisions   vs  the bare output-layer GEMMs of one epoch
           (bench/train_speed.py's floor; a sequence model's output rows are its trained positions,
           and a sampled loss's columns its negatives)
  scoring  one masked top-10 pass over every user (a torch member and EASE)  vs  its product alone
  start    launch -> fold 0's first epoch (--start-model), the child stopped there: once with an
           empty data cache, once with the cache that launch left   vs  that first epoch's own seconds
  cv       a whole 5-fold cv per --cv-models, in its own process through recsys_kit.api.cross_validate
           (what `kit cv` calls): seconds from launch to the first fold's
           first epoch (on_event 'start', 'fold_start', 'epoch'), wall, peak RSS  vs  that first
           epoch's own seconds and the size of one dense users x items float32 score matrix
Prints each figure as it comes and rewrites the JSON after every section, so a run cut short
keeps what it measured. Default output: bench/results/contest_scale-<device>[-quick].json.
Needs torch, numpy, scipy, pandas (no optuna, typer or rich).
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from recsys_kit import files  # noqa: E402
from recsys_kit.config import TrainConfig, from_dict, load_config  # noqa: E402
from recsys_kit.data.load import RATINGS_FILE, load_dataset  # noqa: E402
from recsys_kit.protocol.holdout import assign_folds, contest_holdout  # noqa: E402
from recsys_kit.protocol.metrics import recall_per_user, summarize  # noqa: E402
from recsys_kit.models import REGISTRY, build_model  # noqa: E402
from recsys_kit.models.autoencoder import TorchRecommender  # noqa: E402
from recsys_kit.models.ease import EASE, EASEConfig, gram_matrix  # noqa: E402
from recsys_kit.cv.refit import SCORE_CHUNK  # noqa: E402
from recsys_kit.protocol.ranking import top_k  # noqa: E402
from recsys_kit.data.interactions import ItemSide  # noqa: E402
from recsys_kit.protocol.split import fold_splits, holdout_inputs
from recsys_kit.models.train import effective_batch_size  # noqa: E402
from recsys_kit.protocol.preflight import resolve_device  # noqa: E402
from train_speed import gemm_seconds  # noqa: E402  (the epoch floor; one definition for both benches)

CONTEST = {"users": 31360, "items": 6807, "interactions": 5154471}
QUICK = {"users": 3000, "items": 1200, "interactions": 150_000}
SECTIONS = ("data", "ease", "epochs", "scoring", "start", "cv")
FOLDS = 5
PREDICT_CHUNK = 2048  # recsys_kit.train.predict's user chunk


def say(text: str) -> None:
    print(text, flush=True)


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_rss_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def gpu_peak_mb(device: str) -> int | None:
    return round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None


def ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


# ----------------------------------------------------------------------------- precision (train.py's, when there)

def precision_name(precision: str, device: str) -> str:
    """What TrainConfig.precision resolves to on `device` (fp32 / bf16 / fp16)."""
    from recsys_kit.models import train

    if not hasattr(train, "autocast_dtype"):
        return "fp32"
    dtype = train.autocast_dtype(precision, device)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast_for(name: str, device: str):
    """The autocast context the training loop uses for a resolved precision name (fp32: none)."""
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    return torch.autocast(device_type=device, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def has_train_precision() -> bool:
    return "precision" in TrainConfig.__dataclass_fields__


# ----------------------------------------------------------------------------- data

def ensure_data(args) -> Path:
    if args.data is not None:
        return args.data
    sizes = QUICK if args.quick else CONTEST
    path = Path(tempfile.gettempdir()) / "recsys-kit-synth-{users}x{items}x{interactions}".format(**sizes)
    if not (path / RATINGS_FILE).exists():
        from recsys_kit.data.synth import make_synthetic

        say(f"making the synthetic set in {path} ({sizes['users']:,} users) ...")
        _, seconds = timed(make_synthetic, path, **sizes, seed=0)
        say(f"  synth {seconds:.1f} s")
    return path


def section_data(ctx) -> dict:
    path = ctx["data_dir"]
    frame, read_seconds = timed(pd.read_csv, path / RATINGS_FILE)
    del frame
    dataset, load_seconds = timed(load_dataset, path)
    config = ctx["config"]
    holdout, holdout_seconds = timed(contest_holdout, dataset.matrix, dataset.times, config.holdout, config.seed)
    fold_of_user, folds_seconds = timed(assign_folds, dataset.n_users, FOLDS, config.seed)
    split, split_seconds = timed(lambda: next(iter(fold_splits(holdout, fold_of_user, config))))
    ctx.update(dataset=dataset, holdout=holdout, split=split, side=ItemSide.of(dataset))
    result = {"path": str(path), "users": dataset.n_users, "items": dataset.n_items, "nnz": int(dataset.matrix.nnz),
              "load_dataset_seconds": round(load_seconds, 2), "holdout_seconds": round(holdout_seconds, 2),
              "folds_seconds": round(folds_seconds, 3), "fold0_split_seconds": round(split_seconds, 2),
              "reference_read_csv_seconds": round(read_seconds, 2),
              "ratio_load_to_read_csv": ratio(load_seconds, read_seconds),
              "fold0_fit_users": split.train.n_users, "fold0_users": len(split.users)}
    say(f"data: {dataset.n_users:,} users x {dataset.n_items:,} items, {dataset.matrix.nnz:,} interactions")
    say(f"  load_dataset {load_seconds:.2f} s vs bare pandas.read_csv {read_seconds:.2f} s "
        f"({result['ratio_load_to_read_csv']}x); holdout {holdout_seconds:.2f} s, folds {folds_seconds:.3f} s, "
        f"fold 0 split {split_seconds:.2f} s")
    return result


# ----------------------------------------------------------------------------- epochs

def torch_members() -> list[str]:
    """Registry names whose fit trains a torch network: TorchRecommender subclasses, and any other
    member whose module defines a torch.nn.Module (a sequential model with its own fit, e.g. sasrec)."""
    def trains_a_net(cls) -> bool:
        if issubclass(cls, TorchRecommender) or hasattr(cls, "build_net"):
            return True
        module = inspect.getmodule(cls)
        return any(isinstance(v, type) and issubclass(v, torch.nn.Module) and v.__module__ == module.__name__
                   for v in vars(module).values())
    return [name for name, cls in REGISTRY.items() if trains_a_net(cls)]


def output_width(net: torch.nn.Module, n_items: int) -> int | None:
    """Input width of the layer that makes the items x logits (the last Linear with n_items outputs,
    else an item Embedding used as a tied output): the floor's GEMM inner dimension."""
    width = None
    for module in net.modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == n_items:
            width = module.in_features
    if width is None:
        for module in net.modules():
            if isinstance(module, torch.nn.Embedding) and n_items <= module.num_embeddings <= n_items + 2:
                width = module.embedding_dim
    return width


def member_config(name: str, overrides: list[str]):
    """configs/<name>.toml (what `kit cv --config` runs), else the model's defaults, with overrides."""
    path = ROOT / "configs" / f"{name}.toml"
    if path.exists():
        return load_config(path, overrides)
    return load_config(None, [f"model.name={name}", *overrides])


def output_columns(model, n_items: int) -> int:
    """Columns of the output GEMM: every item, or the shared sampled negatives of a sampled loss."""
    loss, negatives = getattr(model.config, "loss", "softmax"), getattr(model.config, "negatives", None)
    return n_items if loss == "softmax" or not negatives else min(int(negatives), n_items)


def output_rows(model, train, n_fit: int, batch: int) -> tuple[int, int, str]:
    """(output-layer rows per epoch, rows per step, what a row is): one per user for the autoencoders;
    one per trained position for a sequence model (config.max_len: every position predicts the next item)."""
    max_len = getattr(model.config, "max_len", None)
    if max_len is None:
        return n_fit, batch, "user"
    lengths = np.diff(train.rows.indptr)
    positions = int(np.minimum(lengths[lengths >= 2] - 1, max_len).sum())
    per_step = max(1, int(round(positions / max(1, -(-n_fit // batch)))))
    return positions, per_step, "position"


def fit_timed(name: str, precision: str, ctx) -> tuple:
    """A fresh member fitted for --epochs on fold 0's fitting users (no validation); epoch seconds."""
    overrides = [f"train.epochs={ctx['epochs']}", "train.patience=1000000"]
    if has_train_precision():
        overrides.append(f"train.precision={precision}")
    config = member_config(name, overrides)
    model = build_model(config, seed=0, device=ctx["device"])
    stamps = []
    sync(ctx["device"])
    started = time.perf_counter()
    model.fit(ctx["split"].train, ctx["side"], valid=None, on_epoch=lambda record: stamps.append(time.perf_counter()))
    sync(ctx["device"])
    seconds = np.diff([started] + stamps).tolist()
    return model, config, seconds


def section_epochs(ctx) -> dict:
    device, split, n_items = ctx["device"], ctx["split"], ctx["dataset"].n_items
    out = ctx["result"]["epochs"] = {}  # saved after every fit: a run cut short keeps the members done
    for name in [m for m in torch_members() if ctx["members"] is None or m in ctx["members"]]:
        out[name] = {}
        for precision in ctx["precisions"]:
            # auto is what the kit picks by probing this net on this machine: measured as itself
            label = "auto" if precision == "auto" else precision_name(precision, device)
            if label in out[name]:
                continue
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                model, config, seconds = fit_timed(name, precision, ctx)
            except Exception as err:  # a member that fails is a result; the others still run
                out[name][label] = {"error": f"{type(err).__name__}: {err}"}
                say(f"epochs {name} {label}: FAILED {type(err).__name__}: {err}")
                ctx["save"]()
                continue
            net = getattr(model, "net", None)
            picked = getattr(net, "fitted_precision", None) if label == "auto" else label
            width = output_width(net, n_items) if isinstance(net, torch.nn.Module) else None
            n_fit = split.train.n_users
            batch = model.summary.get("batch_size") or effective_batch_size(n_fit, config.train)
            rows, per_step, row_kind = output_rows(model, split.train, n_fit, batch)
            columns = output_columns(model, n_items)
            floor = None
            if width is not None:
                with autocast_for(picked or "fp32", device):  # same FLOPs in steps of at most 8192 rows (memory)
                    floor = gemm_seconds(rows, min(per_step, 8192), width, columns, device)
            steady = float(np.median(seconds[1:])) if len(seconds) > 1 else float(seconds[0])
            out[name][label] = {
                "picked": picked, "seconds_per_epoch": [round(s, 2) for s in seconds],
                "steady_epoch_seconds": round(steady, 2),
                "fit_users": n_fit, "batch_size": batch, "output_width": width,
                "output_rows_per_epoch": rows, "output_row": row_kind, "output_columns": columns, "peak_rss_mb_so_far": peak_rss_mb(),
                "gpu_peak_mb": gpu_peak_mb(device),
                "parameters": model.summary.get("parameters"),
                "reference_gemm_seconds_per_epoch": None if floor is None else round(floor, 3),
                "ratio_epoch_to_gemm": ratio(steady, floor)}
            say(f"epochs {name:<14} {label if label != 'auto' else f'auto ({picked})'}: {steady:.2f} s/epoch (all {', '.join(f'{s:.2f}' for s in seconds)}) vs "
                f"output-layer GEMM floor {'n/a' if floor is None else f'{floor:.3f} s'}: "
                f"{out[name][label]['ratio_epoch_to_gemm']}x  ({n_fit:,} users, batch {batch}, {rows:,} output "
                f"rows; peak RSS so far {peak_rss_mb():,} MB"
                + (f", GPU peak {gpu_peak_mb(device):,} MB)" if device == "cuda" else ")"))
            ctx["save"]()
            if name not in ctx["scoring_models"]:
                ctx["scoring_models"][name] = model  # the first precision's fit is scored below
            del model
    return out


# ----------------------------------------------------------------------------- EASE

def topk_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: the share of a's top-k that is in b's top-k."""
    k = a.shape[1]
    return np.array([len(np.intersect1d(x, y, assume_unique=True)) / k for x, y in zip(a, b)])


def section_ease(ctx) -> dict:
    device, split = ctx["device"], ctx["split"]
    rows = split.train.rows
    l2, *other_l2 = ctx["ease_l2"]
    gram, gram_seconds = timed(gram_matrix, rows, l2)
    _, inv_seconds = timed(np.linalg.inv, gram)
    del gram, _
    reference = gram_seconds + inv_seconds
    out = {"items": rows.shape[1], "fit_users": rows.shape[0], "l2": l2, "device": device,
           "reference_gram_float64_seconds": round(gram_seconds, 2),
           "reference_numpy_inv_float64_seconds": round(inv_seconds, 2), "by_precision": {}}
    say(f"ease: reference float64 Gram {gram_seconds:.2f} s + numpy.linalg.inv {inv_seconds:.2f} s "
        f"({rows.shape[1]:,} items, {rows.shape[0]:,} users)")
    for precision in ("float64", "float32"):  # warm-up: LAPACK / cuSOLVER set up on their first call
        EASE(EASEConfig(l2=l2, precision=precision), device=device).fit(rows[:, :64])
    best = {}
    for precision in ("float64", "float32"):
        model, seconds = timed(EASE(EASEConfig(l2=l2, precision=precision), device=device).fit, split.train)
        best[precision], recall, score_seconds = fold0_top10(model, split)
        out["by_precision"][precision] = {
            "fit_seconds": round(seconds, 2), "ratio_fit_to_numpy_reference": ratio(seconds, reference),
            "fit_peak_mb": model.summary.get("fit_peak_mb"), "fold0_recall@10": round(recall, 5),
            "fold0_score_seconds": round(score_seconds, 2)}
        say(f"  EASE.fit {precision}: {seconds:.2f} s vs Gram + numpy inv {reference:.2f} s "
            f"({ratio(seconds, reference)}x); peak {model.summary.get('fit_peak_mb')} MB; "
            f"fold 0 Recall@10 {recall:.5f}")
        if precision == _auto_solve(device):
            ctx["scoring_models"]["ease"] = model  # the precision the default config solves in
        del model
    overlap = topk_overlap(best["float32"], best["float64"])
    same_order = float(np.mean(np.all(best["float32"] == best["float64"], axis=1)))
    out["float32_vs_float64"] = {
        "users": len(overlap), "top10_overlap_mean": round(float(overlap.mean()), 6),
        "top10_overlap_min": round(float(overlap.min()), 3),
        "users_identical_top10_set": round(float(np.mean(overlap == 1.0)), 6),
        "users_identical_top10_order": round(same_order, 6),
        "time_ratio_float32_to_float64": ratio(out["by_precision"]["float32"]["fit_seconds"],
                                               out["by_precision"]["float64"]["fit_seconds"])}
    f = out["float32_vs_float64"]
    say(f"  float32 vs float64 top-10 on {len(overlap):,} fold-0 users: overlap {f['top10_overlap_mean']:.6f} "
        f"(min {f['top10_overlap_min']}), identical set {f['users_identical_top10_set']:.4f}, "
        f"identical order {f['users_identical_top10_order']:.4f}; fit time float32/float64 "
        f"{f['time_ratio_float32_to_float64']}x")
    for other in other_l2:  # a smaller l2 conditions X^T X + l2 I worse: float32's harder case
        ctx["save"]()
        top, recall = {}, {}
        for precision in ("float64", "float32"):
            model = EASE(EASEConfig(l2=other, precision=precision), device=device).fit(split.train)
            top[precision], recall[precision], _ = fold0_top10(model, split)
            del model
        overlap = topk_overlap(top["float32"], top["float64"])
        out.setdefault("float32_vs_float64_other_l2", {})[str(other)] = entry = {
            "top10_overlap_mean": round(float(overlap.mean()), 6), "top10_overlap_min": round(float(overlap.min()), 3),
            "users_identical_top10_set": round(float(np.mean(overlap == 1.0)), 6),
            "fold0_recall@10_float64": round(recall["float64"], 5), "fold0_recall@10_float32": round(recall["float32"], 5)}
        say(f"  l2 {other:g}: float32 vs float64 top-10 overlap {entry['top10_overlap_mean']:.6f} (min "
            f"{entry['top10_overlap_min']}), identical set {entry['users_identical_top10_set']:.4f}; Recall@10 "
            f"{entry['fold0_recall@10_float64']:.5f} vs {entry['fold0_recall@10_float32']:.5f}")
    return out


def fold0_top10(model, split) -> tuple[np.ndarray, float, float]:
    """Fold 0's users' masked top-10 from `model`, their Recall@10 and the scoring seconds."""
    scores, seconds = timed(model.score, split.inputs)
    best = top_k(scores, 10)
    return best, summarize(recall_per_user(best, split.target, 10)), seconds


def _auto_solve(device: str) -> str:
    from recsys_kit.models.ease import solve_dtype

    return np.dtype(solve_dtype("auto", device)).name


# ----------------------------------------------------------------------------- scoring

def forward_gemm_seconds(n_users: int, width: int, n_items: int, device: str, label: str) -> float:
    """The output layer's forward GEMMs of a scoring pass over n_users, PREDICT_CHUNK users at a time."""
    a = torch.randn(PREDICT_CHUNK, width, device=device)
    w = torch.randn(width, n_items, device=device)
    with autocast_for(label, device):
        a @ w
        sync(device)
        started = time.perf_counter()
        for _ in range(-(-n_users // PREDICT_CHUNK)):
            a @ w
        sync(device)
    return time.perf_counter() - started


def ease_product_seconds(model, rows, device: str) -> float:
    """EASE's product alone (CSR inputs x B, the backend its scoring uses), per SCORE_CHUNK users."""
    rows = rows.astype(np.float32)
    if model.modelled is not None:  # items no training user had are outside B (they score 0)
        rows = rows[:, model.modelled]
    started = time.perf_counter()
    for start in range(0, rows.shape[0], SCORE_CHUNK):
        block = rows[start:start + SCORE_CHUNK]
        if device == "cuda":
            model._raw_scores_torch(block)
        else:
            np.asarray(block @ model.weights)
    return time.perf_counter() - started


def models_to_score(ctx) -> dict:
    """The models the ease and epochs sections fitted; without those sections, EASE at its default
    precision and one epoch of the first torch member (--members) are fitted here."""
    device, split, models = ctx["device"], ctx["split"], ctx["scoring_models"]
    if "ease" not in models:
        models["ease"] = EASE(EASEConfig(), device=device).fit(split.train)
    if set(models) == {"ease"}:
        name = (ctx["members"] or torch_members())[0]
        config = member_config(name, ["train.epochs=1"])
        models[name] = build_model(config, seed=0, device=device).fit(split.train, ctx["side"])
    return models


def section_scoring(ctx) -> dict:
    device, inputs, n_items = ctx["device"], holdout_inputs(ctx["holdout"]), ctx["dataset"].n_items
    out = ctx["result"]["scoring"] = {}
    for name, model in models_to_score(ctx).items():
        try:
            out[name] = score_pass(name, model, inputs, n_items, device)
        except Exception as err:  # one model's failure must not cost the others' figures
            out[name] = {"error": f"{type(err).__name__}: {err}"}
            say(f"scoring {name}: FAILED {type(err).__name__}: {err}")
        ctx["save"]()
    return out


def score_pass(name: str, model, inputs, n_items: int, device: str) -> dict:
    """One masked top-10 pass over every user, SCORE_CHUNK users at a time, and its reference."""
    score_seconds = topk_seconds = 0.0
    for start in range(0, inputs.n_users, SCORE_CHUNK):
        block, seconds = timed(model.score, inputs.take(slice(start, start + SCORE_CHUNK)))
        score_seconds += seconds
        _, seconds = timed(top_k, block, 10)
        topk_seconds += seconds
    total = score_seconds + topk_seconds
    if name.startswith("ease"):
        floor, what = ease_product_seconds(model, inputs.rows, device), "the bare inputs x B product"
    else:
        width = output_width(model.net, n_items)
        label = precision_name(getattr(model.train, "precision", "fp32"), device)
        floor = None if width is None else forward_gemm_seconds(inputs.n_users, width, n_items, device, label)
        what = f"the output layer's forward GEMMs ({label})"
    result = {"users": inputs.n_users, "seconds": round(total, 2), "score_and_mask_seconds": round(score_seconds, 2),
              "top10_seconds": round(topk_seconds, 2), "reference": what,
              "reference_seconds": None if floor is None else round(floor, 3), "ratio_to_reference": ratio(total, floor)}
    say(f"scoring {name:<14}: every user masked top-10 {total:.2f} s (score+mask {score_seconds:.2f}, top-10 "
        f"{topk_seconds:.2f}) vs {what} {'n/a' if floor is None else f'{floor:.3f} s'}: {ratio(total, floor)}x")
    return result


# ----------------------------------------------------------------------------- cv (its own process)

CV_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    args = json.loads(sys.argv[1])
    def emit(kind, **payload):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"event": kind, "t": time.time(), "peak_rss_mb": round(peak), **payload}), flush=True)
    emit("python_started")
    from recsys_kit import api  # what `kit cv` calls
    emit("imported")
    def on_event(event):
        keep = {k: v for k, v in event.items() if k in ("fold", "epoch", "stage", "seconds", "loss", "users", "items")}
        if event["kind"] == "fold_end":
            keep["recall@10"] = event["recall@10"]
        if event["kind"] == "loaded":  # parsed, and checked for the folds (protocol.preflight)
            emit("data_loaded")
            emit("checked")
        elif event["kind"] not in ("end", "loading"):
            emit(event["kind"], **keep)
        if args.get("stop_after_first_epoch") and event["kind"] == "epoch":
            import os
            os._exit(0)  # the start section times the way in, not the run
    refit = args["refit"]
    result = api.cross_validate(args["data"], args["config"], args["folds"], overrides=args["set"],
                                runs_dir=args["runs_dir"], device=args["device"], on_event=on_event,
                                refit=refit["mode"], refit_seeds=refit["seeds"], lb_estimate=refit["lb_estimate"])
    run_dir = result.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    gpu = None
    if args["device"] == "cuda":
        import torch
        gpu = round(torch.cuda.max_memory_allocated() / 2**20)
    emit("done", run_dir=str(run_dir), recall=metrics["recall@10"]["mean"], gpu_peak_mb=gpu,
         wall_seconds=metrics.get("wall_seconds"))
""")


def cv_config_file(name: str) -> str | None:
    path = ROOT / "configs" / f"{name}.toml"
    return str(path) if path.exists() else None


def section_cv(ctx) -> dict:
    out = ctx["result"]["cv"] = {}
    for name in ctx["cv_models"]:
        out[name] = run_cv_child(name, ctx)
        ctx["save"]()
    return out


def section_start(ctx) -> dict:
    """Launch -> fold 0's first epoch of `kit cv`'s library path, twice: with an empty data cache
    (the log parsed) and with the cache the first launch left (recsys_kit.data_cache)."""
    out = ctx["result"]["start"] = {}
    with tempfile.TemporaryDirectory(prefix="contest-scale-cache-") as cache:
        for label in ("parsed", "cached"):
            out[label] = run_cv_child(ctx["start_model"], ctx, stop_after_first_epoch=True,
                                      env={"RECSYS_KIT_CACHE": cache})
            ctx["save"]()
    return out


def run_cv_child(name: str, ctx, stop_after_first_epoch: bool = False, env: dict | None = None) -> dict:
    overrides = [f"model.name={name}"] if cv_config_file(name) is None else []
    overrides += [f"train.epochs={ctx['epochs']}", *ctx["cv_set"]]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               PYTHONUNBUFFERED="1", **(env or {}))
    with tempfile.TemporaryDirectory(prefix="contest-scale-runs-") as runs_dir:
        args = {"data": str(ctx["data_dir"]), "config": cv_config_file(name), "set": overrides, "folds": FOLDS,
                "runs_dir": runs_dir, "device": ctx["device"], "refit": ctx["cv_refit"],
                "stop_after_first_epoch": stop_after_first_epoch}
        launched = time.time()
        try:
            done = subprocess.run([sys.executable, "-c", CV_CHILD, json.dumps(args)], capture_output=True, text=True,
                                  env=env, timeout=ctx["cv_timeout"])
            returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as err:
            returncode, stdout, stderr = "timeout", err.stdout or "", err.stderr or ""
            stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
            stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # max over waited children
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith('{"event"')]
    for event in events:
        event["at"] = round(event.pop("t") - launched, 2)
    first = {}
    for event in events:
        first.setdefault((event["event"], event.get("fold"), event.get("epoch")), event)
    fold_start = first.get(("fold_start", 0, None))
    epoch1 = first.get(("epoch", 0, 1))
    fold0_end = first.get(("fold_end", 0, None))
    done_event = first.get(("done", None, None))
    stages = {key: first.get((key, None, None), {}).get("at") for key in ("imported", "data_loaded", "checked", "start")}
    start = first.get(("start", None, None))
    one_matrix_mb = start["users"] * start["items"] * 4 / 2**20 if start else None
    peak = max([e["peak_rss_mb"] for e in events] or [0]) or None
    result = {
        "exit": returncode, "overrides": overrides, "refit": ctx["cv_refit"],
        "seconds_to": {**stages, "fold0_start": fold_start and fold_start["at"],
                       "fold0_first_epoch_end": epoch1 and epoch1["at"], "fold0_end": fold0_end and fold0_end["at"],
                       "done": done_event and done_event["at"]},
        "reference_first_epoch_seconds": round(epoch1["at"] - fold_start["at"], 2) if epoch1 and fold_start else None,
        "wall_seconds": round(time.time() - launched, 2), "peak_rss_mb": peak,
        "peak_rss_children_mb": round(children_peak),
        "reference_one_score_matrix_mb": None if one_matrix_mb is None else round(one_matrix_mb),
        "ratio_peak_rss_to_one_score_matrix": ratio(peak, one_matrix_mb),
        "gpu_peak_mb": done_event and done_event.get("gpu_peak_mb"),
        "recall@10": done_event and done_event.get("recall"),
        "stages": [{k: e.get(k) for k in ("event", "at", "fold", "stage", "peak_rss_mb")} for e in events
                   if e["event"] != "epoch"],
    }
    if returncode != 0:
        result["stderr_tail"] = stderr[-3000:]
    s = result["seconds_to"]
    say(f"cv {name:<14}: exit {returncode}, wall {result['wall_seconds']:.1f} s, peak RSS {peak} MB "
        f"(one users x items float32 matrix: {result['reference_one_score_matrix_mb']} MB, "
        f"{result['ratio_peak_rss_to_one_score_matrix']}x), OOF Recall@10 {result['recall@10']}")
    say(f"  launch -> imported {s['imported']} s, data loaded {s['data_loaded']} s, run start {s['start']} s, "
        f"fold 0 start {s['fold0_start']} s, fold 0 first epoch done {s['fold0_first_epoch_end']} s "
        f"(that epoch alone {result['reference_first_epoch_seconds']} s), fold 0 end {s['fold0_end']} s")
    if returncode != 0:
        say("  " + "\n  ".join(stderr.strip().splitlines()[-15:]))
    return result


# ----------------------------------------------------------------------------- main

def environment(device: str) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
            "load_average_at_start": round(os.getloadavg()[0], 2)}
    if device == "cuda":
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="contest-layout folder (default: the synthetic set)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed fit and per cv fit")
    parser.add_argument("--quick", action="store_true", help="a 3,000-user synthetic set: a smoke run")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--precisions", nargs="+", default=["auto"], choices=["auto", "fp32", "bf16", "fp16"],
                        help="train.precision values timed per torch member")
    parser.add_argument("--ease-l2", type=float, nargs="+", default=[EASEConfig().l2],
                        help="EASE l2: the first is timed; each further one adds a float32 vs float64 overlap")
    parser.add_argument("--members", nargs="+", default=None, help="torch members to time (default: every one)")
    parser.add_argument("--cv-models", nargs="+", default=["multidae"], help="models of the whole-cv section")
    parser.add_argument("--start-model", default="multidae", help="model of the start section")
    parser.add_argument("--cv-set", action="append", default=[], help="extra --set override for the cv section")
    parser.add_argument("--cv-refit", default="full", choices=["full", "folds", "both", "none"])
    parser.add_argument("--cv-refit-seeds", type=int, default=0, help="0 = kit cv's auto")
    parser.add_argument("--no-lb-estimate", action="store_true", help="cv without the estimate's two extra fits")
    parser.add_argument("--cv-timeout", type=float, default=None, help="seconds before a cv child is killed")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    out = args.out or ROOT / "bench" / "results" / f"contest_scale-{device}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"device": device, "epochs": args.epochs, "quick": args.quick, "environment": environment(device),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    say(f"contest_scale on {device} ({json.dumps(result['environment'])})")
    data_dir = ensure_data(args)
    ctx = {"device": device, "epochs": args.epochs, "members": args.members, "result": result,
           "ease_l2": args.ease_l2,
           "save": lambda: files.write_json(out, result), "data_dir": data_dir, "precisions": args.precisions,
           "config": from_dict({"model": {"name": "multidae"}}, "defaults"), "scoring_models": {},
           "cv_models": args.cv_models, "start_model": args.start_model, "cv_set": args.cv_set, "cv_timeout": args.cv_timeout,
           "cv_refit": {"mode": args.cv_refit, "seeds": args.cv_refit_seeds, "lb_estimate": not args.no_lb_estimate}}
    sections = [s for s in SECTIONS if s in args.sections]
    if any(s in sections for s in ("epochs", "ease", "scoring")) and "data" not in sections:
        sections.insert(0, "data")  # they run on fold 0's split
    for name in sections:
        started = time.perf_counter()
        try:
            result[name] = globals()[f"section_{name}"](ctx)
        except Exception as err:  # one broken section must not cost the others' figures
            result[name] = {"error": f"{type(err).__name__}: {err}"}
            say(f"{name}: FAILED {type(err).__name__}: {err}")
        result.setdefault("section_seconds", {})[name] = round(time.perf_counter() - started, 1)
        # 1-minute load average after each section: on a shared machine, read the figures beside it
        result.setdefault("load_average_after", {})[name] = round(os.getloadavg()[0], 2)
        files.write_json(out, result)
    say(f"wrote {out}")


if __name__ == "__main__":
    main()
