"""`kit stack`: a second stage that reranks the members' candidates with a model learned on OOF rows.

Per user, the candidates are the union of each member's top-N unseen items. Each (user, candidate)
gets features (recsys_kit.blending.stack_features) and the label "hidden in the holdout"; a
gradient-boosted classifier (scikit-learn's HistGradientBoostingClassifier) learns which
candidates are hidden. Honest by construction, as the members are: fold f's users are scored by a
ranker fitted on the other folds' users only, so the stack's OOF Recall@10 compares with every
member's and blend's on the same users. The submission's scores come from a ranker fitted on every
user's OOF candidates and applied to the members' test scores and every public row. Unless the
stack's gain over the best member is clear of zero (a paired bootstrap interval over users), the
run holds the best member's scores instead, and says so.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

from recsys_kit import files
from recsys_kit.blending.members import check_compatible, copy_shared_files, member_rows
from recsys_kit.blending.stack_features import (GROUPS, Level, candidates, dropped_columns, feature_names,
                                                member_features, side_of)
from recsys_kit.blending.weights import paired_interval
from recsys_kit.errors import DataError
from recsys_kit.protocol.metrics import K, build_metrics, ndcg_per_user, recall_per_user, summarize
from recsys_kit.protocol.ranking import top_k
from recsys_kit.runs import store
from recsys_kit.runs.run_dir import RunDir
from recsys_kit.seeds import derive_seed

EventCallback = Callable[[dict], None]
NOT_CANDIDATE = -1.0  # below every ranker probability, above the seen items' -inf


@dataclass(frozen=True)
class StackOptions:
    candidates: int = 50  # each member's top-N unseen items per user join the candidates
    seed: int = 0  # base seed of the rankers and their negative samples
    chunk: int = 1024  # users per block while reading score matrices
    max_train_rows: int = 1_000_000  # negatives are sampled down to this many rows per ranker fit
    max_iter: int = 200  # boosting iterations (early stopping on a validation tenth)
    learning_rate: float = 0.1
    fallback: bool = True  # keep the best member unless the stack's gain is clear of zero
    bootstrap: int = 1000  # resamples of the users for the gain's paired interval
    drop: tuple[str, ...] = ()  # feature groups (stack_features.GROUPS) left out: an ablation
    relative: bool = False  # count features over their level's own scale (stack_features.Level)

    def check(self) -> None:
        unknown = sorted(set(self.drop) - set(GROUPS))
        if unknown:
            raise DataError(f"stack option drop: unknown feature group(s) {unknown}; choose from {sorted(GROUPS)}")
        if self.candidates < K:
            raise DataError(f"--candidates {self.candidates}: at least {K}, so a member's own top-{K} is "
                            f"always among the candidates")
        for name in ("chunk", "max_train_rows", "max_iter", "bootstrap"):
            if getattr(self, name) < 1:
                raise DataError(f"stack option {name} must be >= 1, got {getattr(self, name)}")


@dataclass
class CandidateTable:
    """One level's candidate pairs: user (row), item, features, label (None at the test level)."""

    users: np.ndarray
    items: np.ndarray
    features: np.ndarray
    labels: np.ndarray | None


def _notify(on_event: EventCallback | None, kind: str, **payload) -> None:
    if on_event is not None:
        on_event({"kind": kind, **payload})


def build_table(members: list[RunDir], scores_name: str, level: Level, target: sp.csr_matrix | None,
                options: StackOptions, on_chunk: Callable[[], None] | None = None) -> CandidateTable:
    """Candidates and features of every user, a block of users at a time (members read one block each)."""
    n_users = level.rows.shape[0]
    parts: list[CandidateTable] = []
    for start in range(0, n_users, options.chunk):
        rows = slice(start, min(start + options.chunk, n_users))
        blocks = [member_rows(m.path, scores_name, rows) for m in members]
        local, items = candidates(blocks, options.candidates)
        users = local + start
        features = np.hstack([member_features(blocks, local, items),
                              level.user_item_features(users, items, options.relative)])
        features[:, dropped_columns([m.name for m in members], options.drop)] = np.nan  # missing to the ranker
        labels = None if target is None else np.asarray(target[users, items]).ravel() > 0
        parts.append(CandidateTable(users, items, features, labels))
        if on_chunk is not None:
            on_chunk()
    return CandidateTable(np.concatenate([p.users for p in parts]), np.concatenate([p.items for p in parts]),
                          np.vstack([p.features for p in parts]),
                          None if target is None else np.concatenate([p.labels for p in parts]))


def fit_ranker(table: CandidateTable, keep: np.ndarray, options: StackOptions, seed: int):
    """A classifier of "hidden" on the rows `keep` (all positives, negatives sampled down to the cap)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rows = np.flatnonzero(keep)
    positive = table.labels[rows]
    negatives = rows[~positive]
    room = max(options.max_train_rows - int(positive.sum()), 1)
    if len(negatives) > room:
        rng = np.random.default_rng(derive_seed(seed, "negatives"))
        negatives = np.sort(rng.choice(negatives, room, replace=False))
    rows = np.sort(np.concatenate([rows[positive], negatives]))
    model = HistGradientBoostingClassifier(max_iter=options.max_iter, learning_rate=options.learning_rate,
                                           random_state=derive_seed(seed, "ranker") % (2**31))
    labels = table.labels[rows]
    if labels.all() or not labels.any():  # one class only: a constant ranker (ties keep the members' order)
        return _Constant(float(labels.mean()) if len(labels) else 0.0)
    features = table.features[rows]
    features[:, np.isnan(features).all(axis=0)] = 0  # a feature the contest lacks (no years): a constant
    return model.fit(features, labels)


class _Constant:
    def __init__(self, value: float):
        self.value = value

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return np.column_stack([np.full(len(features), 1 - self.value), np.full(len(features), self.value)])


def cross_fit(table: CandidateTable, fold_of_user: np.ndarray, has_target: np.ndarray, options: StackOptions,
              on_fold: Callable[[int], None] | None = None, columns: list[str] | None = None
              ) -> tuple[np.ndarray, dict[str, float]]:
    """Each candidate's probability from the ranker fitted on the other folds' users only, and the
    features' permutation importance for fold 0's ranker on fold 0's rows (users it never saw)."""
    fold = fold_of_user[table.users]
    scored = np.full(len(table.users), np.nan, dtype=np.float32)
    importance: dict[str, float] = {}
    for f in range(int(fold_of_user.max()) + 1):
        ranker = fit_ranker(table, (fold != f) & has_target[table.users], options,
                            derive_seed(options.seed, "stack-fold", f))
        mine = fold == f
        if mine.any():
            scored[mine] = ranker.predict_proba(table.features[mine])[:, 1]
            if f == 0 and columns is not None:
                rows = np.flatnonzero(mine & has_target[table.users])
                importance = permutation_importance(ranker, table.features[rows], table.labels[rows], columns,
                                                    derive_seed(options.seed, "stack-importance"))
        if on_fold is not None:
            on_fold(f)
    return scored, importance


def permutation_importance(ranker, features: np.ndarray, labels: np.ndarray, columns: list[str], seed: int,
                           rows: int = 50_000) -> dict[str, float]:
    """ROC AUC lost when one feature is shuffled among held-out candidates (a sample of `rows`): what
    the ranker leans on. Empty when the rows hold one class only (no AUC)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    if len(labels) > rows:
        pick = np.sort(rng.choice(len(labels), rows, replace=False))
        features, labels = features[pick], labels[pick]
    if labels.all() or not labels.any():
        return {}
    base = roc_auc_score(labels, ranker.predict_proba(features)[:, 1])
    out = {}
    for j, name in enumerate(columns):
        shuffled = features.copy()
        shuffled[:, j] = rng.permutation(shuffled[:, j])
        out[name] = round(float(base - roc_auc_score(labels, ranker.predict_proba(shuffled)[:, 1])), 5)
    return out


def write_scores(path: Path, table: CandidateTable, scored: np.ndarray, seen: sp.csr_matrix,
                 chunk: int) -> None:
    """users x items float32: the ranker's probability on candidates, NOT_CANDIDATE elsewhere, -inf on seen."""
    n_users, n_items = seen.shape
    out = files.open_scores(path, (n_users, n_items))
    try:
        bounds = np.searchsorted(table.users, np.arange(0, n_users + chunk, chunk))
        for b, start in enumerate(range(0, n_users, chunk)):
            stop = min(start + chunk, n_users)
            block = np.full((stop - start, n_items), NOT_CANDIDATE, dtype=np.float32)
            pick = slice(bounds[b], bounds[b + 1])
            block[table.users[pick] - start, table.items[pick]] = scored[pick]
            part = seen[start:stop]
            block[np.repeat(np.arange(stop - start), np.diff(part.indptr)), part.indices] = -np.inf
            out[start:stop] = block
        files.finish_scores(path, out)
    finally:
        if not out.closed:
            files.discard_scores(path, out)


def _per_user(run_dir: Path, name: str, target: sp.csr_matrix, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(Recall@10, NDCG@10) per user of a score matrix's own top-10."""
    n_users = target.shape[0]
    recall, ndcg = np.full(n_users, np.nan), np.full(n_users, np.nan)
    with store.load_scores(run_dir, name) as scores:
        for start in range(0, n_users, chunk):
            rows = slice(start, min(start + chunk, n_users))
            best = top_k(scores[rows], K)
            recall[rows] = recall_per_user(best, target[rows], K)
            ndcg[rows] = ndcg_per_user(best, target[rows], K)
    return recall, ndcg


def levels(first: RunDir, dataset=None) -> tuple[Level, Level, sp.csr_matrix]:
    """(OOF level: the holdout inputs, test level: every public row, the holdout targets). Times and
    side features come from the contest's Dataset when given (checked to be the runs' data)."""
    input_rows, target = first.holdout()
    public = (input_rows + target).tocsr()
    if dataset is None:
        return Level(input_rows, None), Level(public, None), target
    if dataset.fingerprint() != first.data.get("fingerprint"):
        raise DataError(f"--data: its fingerprint {dataset.fingerprint()} is not the runs' data "
                        f"({first.data.get('fingerprint')}); pass the folder the members were run on")
    side = side_of(dataset)
    if dataset.times is None:
        return Level(input_rows, None, side), Level(public, None, side), target
    # The Dataset's matrix holds the same entries as input + target, in the order its times follow.
    return (Level(input_rows, times_of(dataset, input_rows), side), Level(dataset.matrix, dataset.times, side),
            target)


def times_of(dataset, rows: sp.csr_matrix) -> sp.csr_matrix:
    """The log's time of every entry of `rows` (a subset of the Dataset's entries), aligned with `rows`."""
    matrix, n_items = dataset.matrix, dataset.n_items
    full_keys = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr)) * n_items + matrix.indices
    keys = np.repeat(np.arange(rows.shape[0], dtype=np.int64), np.diff(rows.indptr)) * n_items + rows.indices
    order = np.argsort(full_keys, kind="stable")
    at = order[np.searchsorted(full_keys, keys, sorter=order)]
    return sp.csr_matrix((dataset.times.data[at], rows.indices.copy(), rows.indptr.copy()), shape=rows.shape)


def choose_stack(stack_recall: np.ndarray, member_recall: list[np.ndarray], members: list[RunDir],
                 options: StackOptions) -> dict:
    """The stack, or the best member by OOF Recall@10 when the stack's paired gain over it (every user
    with a target: all are out of fold) has a 90% interval reaching zero."""
    best = int(np.argmax([summarize(r) for r in member_recall]))
    gain = stack_recall - member_recall[best]
    low, high = paired_interval(gain, options.bootstrap, derive_seed(options.seed, "stack-gain"))
    out = {"gain": summarize(gain), "gain_interval90": [low, high], "rival": members[best].name}
    if low > 0 or not options.fallback:
        return {**out, "used": "stack", "reason": "the gain's 90% interval lies above zero" if low > 0
                else "--no-fallback"}
    return {**out, "used": f"best member {members[best].name}", "member": best,
            "reason": "the stack's gain over the best member is not clear of zero (90% interval reaches 0): "
                      "the run holds the best member's scores"}


def run_stack(run_dirs, runs_dir: Path, name: str | None = None, options: StackOptions = StackOptions(),
              dataset=None, on_event: EventCallback | None = None) -> Path:
    """Rerank the members' candidates with a learned second stage; returns the new run directory."""
    started = time.time()
    options.check()
    members = check_compatible(run_dirs)
    first = members[0]
    oof_level, test_level, target = levels(first, dataset)
    fold_of_user, has_target = first.folds(), np.diff(target.indptr) > 0
    chunks = -(-target.shape[0] // options.chunk)
    _notify(on_event, "start", members=[str(m.path) for m in members], users=target.shape[0],
            items=target.shape[1], candidates=options.candidates, data=dataset is not None)

    _notify(on_event, "stage", stage="oof", total=chunks)
    table = build_table(members, "oof_scores.npy", oof_level, target, options,
                        on_chunk=lambda: _notify(on_event, "advance", stage="oof"))
    folds = int(fold_of_user.max()) + 1
    _notify(on_event, "stage", stage="rankers", total=folds + 1)
    columns = feature_names([m.name for m in members])
    oof_scored, importance = cross_fit(table, fold_of_user, has_target, options,
                                       on_fold=lambda f: _notify(on_event, "advance", stage="rankers"),
                                       columns=columns)
    final = fit_ranker(table, has_target[table.users], options, derive_seed(options.seed, "stack-all"))
    _notify(on_event, "advance", stage="rankers")

    run_dir = _start_run_dir(members, runs_dir, name, options, dataset is not None)
    write_scores(run_dir / "oof_scores.npy", table, oof_scored, oof_level.rows, options.chunk)
    reach = {"candidate_recall": _candidate_recall(table, target), "candidates_per_user": len(table.users) / len(target.indptr[1:])}
    del table
    _notify(on_event, "stage", stage="test", total=chunks)
    test_table = build_table(members, "test_scores.npy", test_level, None, options,
                             on_chunk=lambda: _notify(on_event, "advance", stage="test"))
    write_scores(run_dir / "test_scores.npy", test_table, final.predict_proba(test_table.features)[:, 1],
                 test_level.rows, options.chunk)
    del test_table

    metrics = _stack_metrics(run_dir, members, target, oof_level, fold_of_user, has_target, options)
    metrics.update({**reach, "features": columns, "feature_importance": importance,
                    "wall_seconds": round(time.time() - started, 2)})
    files.write_json(run_dir / "metrics.json", metrics)  # last: its presence marks a finished run
    _notify(on_event, "end", run_dir=str(run_dir), metrics=metrics)
    return run_dir


def _start_run_dir(members: list[RunDir], runs_dir: Path, name: str | None, options: StackOptions,
                   with_data: bool) -> Path:
    first = members[0].path
    run_dir = store.create_run_dir(runs_dir, name or store.default_run_name("stack"))
    files.write_json(run_dir / "config.json", {"kind": "stack", "members": [str(m.path) for m in members],
                                              **asdict(options), "data": with_data})
    copy_shared_files(first, run_dir)
    return run_dir


def _candidate_recall(table: CandidateTable, target: sp.csr_matrix) -> float | None:
    """Share of the hidden items that are among the candidates: the most any reranking can find."""
    hidden = int(target.nnz)
    return float(table.labels.sum() / hidden) if hidden else None


def _stack_metrics(run_dir: Path, members: list[RunDir], target: sp.csr_matrix, oof_level: Level,
                   fold_of_user: np.ndarray, has_target: np.ndarray, options: StackOptions) -> dict:
    """OOF figures of the stack against each member's own top-10, the fallback's choice, metrics.json."""
    from recsys_kit.protocol import time_filter

    recall, ndcg = _per_user(run_dir, "oof_scores.npy", target, options.chunk)
    own = [_per_user(member.path, "oof_scores.npy", target, options.chunk) for member in members]
    choice = choose_stack(recall, [r for r, _ in own], members, options)
    if choice["used"] != "stack":  # the best member's own scores, so kit submit writes its top-10
        best = members[choice["member"]]
        for name in ("oof_scores.npy", "test_scores.npy"):
            files.copy_file(best.path / name, run_dir / name)
        recall, ndcg = own[choice["member"]]
    metrics = build_metrics(recall, ndcg, np.diff(oof_level.rows.indptr), fold_of_user, has_target)
    metrics.update({
        "model": "stack", "method": "stack", "choice": choice,
        "members": [{"path": str(m.path), "name": m.name, "model": m.metrics.get("model"),
                     "recall@10": summarize(r), "ndcg@10": summarize(n)} for m, (r, n) in zip(members, own)],
        "lb_estimate": {"recall@10": None, "reason": "not estimated for a stack yet"}})
    metrics["time_filter"] = time_filter.margin_report(store.load_scores(run_dir, "oof_scores.npy"), target,
                                                       time_filter.load_times(run_dir))
    return metrics
