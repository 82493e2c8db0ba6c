"""`kit report`: one self-contained HTML page for cv runs, ensembles and tune studies.

Everything the page shows is embedded (PNG figures as base64, CSS inline, no script): it opens
offline and travels as one file. Runs are only read, never changed. matplotlib is imported
inside the drawing functions (Agg, no pyplot state), so importing this module stays cheap.
Figures and tables come from the files `kit cv`, `kit ensemble` and `kit tune` wrote:
metrics.json (folds, activity groups, the blend's weights and held-out half), curves.json
(per-epoch records) and a study's journal. The figures in the tables are the ones plotted.
"""
from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys_kit import files
from recsys_kit.runs import store
from recsys_kit.runs.run_dir import RunDir
from recsys_kit.runs.curves import load_curves
from recsys_kit.errors import DataError
from recsys_kit.report.study import read_study

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
FIX = "pass run directories written by `kit cv` or `kit ensemble`, or a `kit tune` study directory " \
      "(`kit runs --runs-dir DIR` lists them)"


@dataclass(frozen=True)
class Item:
    """One directory given to the report: a cv run, an ensemble run or a tune study."""
    path: Path
    label: str  # the directory's name, or the path as given when two names collide
    kind: str  # "cv" | "ensemble" | "study"
    metrics: dict | None = None


def open_item(path: Path, label: str | None = None) -> Item:
    """The run or study at `path`, or a DataError naming it and the fix."""
    run = RunDir(path)
    label = label or run.path.name or str(run.path)
    if run.kind == "tune":
        return Item(run.path, label, "study")
    if run.status == "missing":
        raise DataError(f"{run.path}: no such run directory; {FIX}")
    if run.status == "not a run" and run.path.exists() and not run.path.is_dir():
        raise DataError(f"{run.path}: a file, not a run directory; {FIX}")
    run.require_finished(FIX)
    return Item(run.path, label, run.kind, run.metrics)


def open_items(paths) -> list[Item]:
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError(f"no run given; {FIX}")
    seen: dict[Path, Path] = {}
    for path in paths:
        if path.exists() and path.resolve() in seen:
            raise DataError(f"{path}: listed twice (also as {seen[path.resolve()]}); pass each run once")
        if path.exists():
            seen[path.resolve()] = path
    names = [p.name for p in paths]
    return [open_item(p, p.name if names.count(p.name) == 1 else str(p)) for p in paths]


# ----------------------------------------------------------------------------- figures from runs

def activity_recall(item: Item) -> dict:
    """Recall@10 by user-activity group: metrics.json's breakdown, else computed from the run's files."""
    groups = ((item.metrics or {}).get("groups") or {}).get("recall@10")
    return groups if groups else groups_from_scores(item.path)


def groups_from_scores(run_dir: Path) -> dict:
    """The activity-group breakdown from oof_scores.npy, the holdout targets and input rows: the
    same helper and users as metrics.json's (users with a hidden target), chunked by users."""
    from recsys_kit.protocol.metrics import K, group_breakdown, recall_per_user
    from recsys_kit.protocol.ranking import top_k_chunked

    target = store.load_sparse(run_dir, "holdout_target.npz")
    activity = np.diff(store.load_sparse(run_dir, "holdout_input.npz").indptr)
    recall = recall_per_user(top_k_chunked(store.load_scores(run_dir, "oof_scores.npy"), K), target, K)
    has_target = np.diff(target.indptr) > 0
    return group_breakdown(recall[has_target], activity[has_target])


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # Agg through savefig; no pyplot, no window, no global state

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})  # no URL inside the page
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def curves_figure(label: str, curves: dict) -> str | None:
    """Loss and validation Recall@10 per epoch, one line per fold; None when no fold has epochs."""
    from matplotlib.ticker import MaxNLocator

    folds = {int(f): records for f, records in curves["folds"].items() if records}
    if not folds:
        return None
    figure = _figure(10, 3.4)
    loss_ax, recall_ax = figure.subplots(1, 2)
    for fold, records in sorted(folds.items()):
        colour = COLOURS[fold % len(COLOURS)]
        losses = [r for r in records if r.get("loss") is not None]  # a multi-phase fit: its first phase's
        loss_ax.plot([r["epoch"] for r in losses], [r["loss"] for r in losses], color=colour, label=f"fold {fold + 1}")
        scored = [r for r in records if r.get("valid_recall@10") is not None]
        if scored:
            recall_ax.plot([r["epoch"] for r in scored], [r["valid_recall@10"] for r in scored], color=colour,
                           marker="o", markersize=3, label=f"fold {fold + 1}")
    loss_ax.set(title=f"{label}: training loss", xlabel="epoch", ylabel="loss")
    recall_ax.set(title=f"{label}: validation Recall@10", xlabel="epoch", ylabel="Recall@10")
    for ax in (loss_ax, recall_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(figure)


def folds_figure(items: list[Item]) -> str:
    """Per-fold Recall@10 of each run as points, its mean as a bar: the fold spread side by side."""
    figure = _figure(max(4.0, 1.3 * len(items) + 2), 3.4)
    ax = figure.subplots()
    for x, item in enumerate(items):
        values = [v for v in item.metrics["recall@10"]["folds"] if v is not None]
        colour = COLOURS[x % len(COLOURS)]
        if values:
            ax.bar(x, np.mean(values), width=0.6, color=colour, alpha=0.35)
            offsets = np.linspace(-0.2, 0.2, len(values)) if len(values) > 1 else [0.0]
            ax.scatter(x + np.asarray(offsets), values, color=colour, zorder=3, s=18)
    ax.set_xticks(range(len(items)), [item.label for item in items], rotation=20, ha="right", fontsize=8)
    ax.set(title="OOF Recall@10 per fold (bar: mean)", ylabel="Recall@10")
    ax.grid(axis="y", alpha=0.3)
    return _png(figure)


def leaderboard_figure(items: list[Item], public: dict[str, float]) -> str | None:
    """OOF Recall@10, the leaderboard estimate and the recorded public score of each run, side by side;
    None when no run has a public score recorded (kit lb)."""
    rows = [(item.label, item.metrics["recall@10"].get("mean"), item.metrics["recall@10"].get("lb_estimate"),
             public.get(str(item.path.resolve()))) for item in items]
    if not any(row[3] is not None for row in rows):
        return None
    figure = _figure(max(4.0, 1.3 * len(rows) + 2), 3.4)
    ax = figure.subplots()
    for offset, (what, index) in zip((-0.25, 0.0, 0.25), (("OOF", 1), ("estimate", 2), ("public", 3))):
        ax.bar([x + offset for x in range(len(rows))], [row[index] or 0 for row in rows], width=0.25, label=what,
               color=COLOURS[index - 1])
    ax.set_xticks(range(len(rows)), [row[0] for row in rows], rotation=20, ha="right", fontsize=8)
    ax.set(title="OOF, leaderboard estimate and public score (kit lb)", ylabel="Recall@10")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(figure)


def groups_figure(items: list[Item], groups: list[dict]) -> str:
    """Grouped bars: Recall@10 per user-activity group, one bar per run."""
    names = list(groups[0])
    figure = _figure(10, 3.6)
    ax = figure.subplots()
    width = 0.8 / len(items)
    for i, (item, breakdown) in enumerate(zip(items, groups)):
        heights = [(breakdown.get(name) or {}).get("mean") or 0.0 for name in names]
        ax.bar(np.arange(len(names)) + (i - (len(items) - 1) / 2) * width, heights, width=width,
               color=COLOURS[i % len(COLOURS)], label=item.label)
    ax.set_xticks(range(len(names)), [f"{name}\nleast -> most active" if k == 0 else name
                                      for k, name in enumerate(names)], fontsize=8)
    ax.set(title="OOF Recall@10 by user-activity group (quantiles of input length)", ylabel="Recall@10")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never on them
    return _png(figure)


def weights_figure(item: Item) -> str:
    members = item.metrics.get("members") or []
    figure = _figure(8, 0.5 * len(members) + 1.4)
    ax = figure.subplots()
    y = np.arange(len(members))
    ax.barh(y - 0.2, [m.get("weight", 0.0) for m in members], height=0.4, color=COLOURS[0], label="final")
    ax.barh(y + 0.2, [m.get("weight_half_a", 0.0) for m in members], height=0.4, color=COLOURS[1],
            label="fitted on half A")
    ax.set_yticks(y, [m.get("name", "?") for m in members], fontsize=8)
    ax.invert_yaxis()
    ax.set(title=f"{item.label}: blend weights", xlabel="weight")
    ax.legend(fontsize=8)
    return _png(figure)


# ----------------------------------------------------------------------------- the page

def _num(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: str, alt: str, css: str = "") -> str:
    kind = f' class="{css}"' if css else ""
    return f'<img{kind} alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _summary(items: list[Item]) -> str:
    rows = []
    for item in items:
        m = item.metrics
        recall = m["recall@10"]
        rows.append([item.label, item.kind, m.get("model") if item.kind == "cv" else f"ensemble ({m.get('method')})",
                     len(recall.get("folds") or []), f"{_num(recall.get('mean'))} +- {_num(recall.get('std'))}",
                     _num((m.get("lb_estimate") or {}).get("recall@10")), _num((m.get("ndcg@10") or {}).get("mean")),
                     f"{m.get('users_evaluated', 0):,}",
                     "n/a" if m.get("wall_seconds") is None else f"{m['wall_seconds']:.0f} s"])
    return _table(["run", "kind", "model", "folds", "OOF Recall@10 (mean +- std)", "LB estimate", "NDCG@10",
                   "users", "wall"], rows)


def _curves_section(item: Item) -> str:
    curves = load_curves(item.path)
    if curves is None:
        return _note(f"{item.label}: no curves.json (a run made before `kit cv` saved training curves)")
    png = curves_figure(item.label, curves)
    if png is None:
        return _note(curves.get("closed_form") or f"{item.label}: no epoch records")
    rows = []
    for fold, records in sorted((int(f), r) for f, r in curves["folds"].items()):
        scored = [r for r in records if r.get("valid_recall@10") is not None]
        best = max(scored, key=lambda r: r["valid_recall@10"]) if scored else None
        last = records[-1] if records else {}
        rows.append([fold + 1, len(records), best["epoch"] if best else "n/a",
                     _num(best["valid_recall@10"] if best else None), _num(last.get("loss")),
                     _num(last.get("seconds"), 1)])
    return _img(png, f"training curves of {item.label}") + _table(
        ["fold", "epochs", "best epoch", "best validation Recall@10", "final loss", "seconds"], rows)


def _ensemble_section(item: Item) -> str:
    m = item.metrics
    members = m.get("members") or []
    half = m.get("holdout_half") or {}
    member_half = [(x.get("holdout_half") or {}).get("recall@10") for x in members]
    best_member = max((v for v in member_half if v is not None), default=None)
    blend_half = half.get("recall@10")
    gain = None if blend_half is None or best_member is None else blend_half - best_member
    lines = [f"Held-out half: {half.get('note', '')}. Blend Recall@10 on half B {_num(blend_half)}, best "
             f"member alone {_num(best_member)}: gain {'n/a' if gain is None else f'{gain:+.4f}'}."]
    choice = m.get("choice") or {}
    if choice:
        lines.append(f"Submitted: {choice.get('used')} ({choice.get('reason', '')}).")
    rows = [[x.get("name"), x.get("model"), _num(x.get("weight")), _num(x.get("weight_half_a")),
             _num((x.get("recall@10") or {}).get("mean")), _num(v)] for x, v in zip(members, member_half)]
    table = _table(["member", "model", "weight", "weight (half A fit)", "OOF Recall@10", "half B Recall@10"], rows)
    picture = _img(weights_figure(item), f"blend weights of {item.label}") if members else ""
    return "".join(f"<p>{html.escape(line)}</p>" for line in lines) + picture + table


def _stack_section(item: Item) -> str:
    """The stack's choice, its candidates' reach and what its ranker leans on (permutation importance)."""
    m = item.metrics
    choice = m.get("choice") or {}
    lines = [f"Submitted: {choice.get('used')} ({choice.get('reason', '')})." if choice else "",
             f"The candidates hold {_num(m.get('candidate_recall'), 3)} of the hidden items "
             f"({_num(m.get('candidates_per_user'), 1)} per user)."]
    importance = m.get("feature_importance") or {}
    ranked = sorted(importance.items(), key=lambda kv: -kv[1])
    table = _table(["feature", "ROC AUC lost when shuffled (fold 0's ranker, fold 0's rows)"],
                   [[name, f"{value:+.4f}"] for name, value in ranked]) if ranked else _note(
        "no feature importance in this run (made before the kit recorded it, or one class only)")
    return "".join(f"<p>{html.escape(line)}</p>" for line in lines if line) + table


def _study_section(item: Item) -> str:
    study = read_study(item.path)
    trials = ", ".join(f"{n} {state.lower()}" for state, n in study.counts.items()) or "none"
    parts = [f"<p>Trials: {html.escape(trials)}</p>"]
    if study.top:
        params = sorted({key for row in study.top for key in row["params"]})
        parts.append(_table(["trial", "OOF Recall@10"] + params,
                            [[row["number"], _num(row["value"])]
                             + [_param(row["params"].get(key)) for key in params] for row in study.top]))
    titles = {"history.png": "optimisation history", "importances.png": "parameter importances"}
    parts += [f"<h3>{titles.get(name, name)}</h3>" + _img(png, f"{item.label}: {titles.get(name, name)}", "study")
              for name, png in study.images]
    if study.note:
        parts.append(_note(study.note))
    return "".join(parts)


def _param(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else "" if value is None else str(value)


STYLE = """body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;margin-top:32px}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f0f0f0}td{text-align:right}td:first-child{text-align:left}
img{max-width:100%;display:block}img.study{max-width:720px}.note{color:#666;font-style:italic}"""


def build_report(paths) -> str:
    """The page as one HTML string (DataError for a path that is not a finished run or study)."""
    items = open_items(paths)
    scored = [item for item in items if item.kind in ("cv", "ensemble")]
    body = [f"<h1>recsys-kit report</h1><p>{len(items)} item(s), made "
            f"{html.escape(time.strftime('%Y-%m-%d %H:%M'))}: "
            + ", ".join(f"<code>{html.escape(str(item.path))}</code> ({item.kind})" for item in items) + "</p>"]
    if scored:
        body.append("<h2>Runs</h2>" + _summary(scored))
        folds = max(len(item.metrics["recall@10"].get("folds") or []) for item in scored)
        body.append("<h2>Fold spread</h2>" + _img(folds_figure(scored), "Recall@10 per fold") + _table(
            ["run"] + [f"fold {f + 1}" for f in range(folds)] + ["mean", "std"],
            [[item.label] + [_num(v) for v in item.metrics["recall@10"]["folds"]]
             + [""] * (folds - len(item.metrics["recall@10"]["folds"]))
             + [_num(item.metrics["recall@10"].get("mean")), _num(item.metrics["recall@10"].get("std"))]
             for item in scored]))
        public = _public_scores(scored)
        board = leaderboard_figure(scored, public)
        if board:
            body.append("<h2>Leaderboard</h2>" + _img(board, "OOF, estimate and public score"))
        groups = [activity_recall(item) for item in scored]
        body.append("<h2>Recall@10 by user activity</h2>" + _img(groups_figure(scored, groups), "activity groups")
                    + _table(["activity group"] + [item.label for item in scored],
                             [[name] + [f"{_num((g.get(name) or {}).get('mean'))} "
                                        f"({(g.get(name) or {}).get('users', 0):,} users, "
                                        f"{'-'.join(map(str, (g.get(name) or {}).get('activity_range', [])))} items)"
                                        for g in groups] for name in groups[0]]))
    cv_items = [item for item in items if item.kind == "cv" and item.metrics.get("model") != "stack"]
    if cv_items:
        body.append('<h2 id="curves">Training curves</h2>'
                    + "".join(f"<h3>{html.escape(item.label)}</h3>" + _curves_section(item) for item in cv_items))
    for item in items:
        if item.kind == "ensemble":
            body.append(f"<h2>Blend {html.escape(item.label)}</h2>" + _ensemble_section(item))
        elif item.kind == "cv" and item.metrics.get("model") == "stack":
            body.append(f"<h2>Stack {html.escape(item.label)}</h2>" + _stack_section(item))
        elif item.kind == "study":
            body.append(f"<h2>Study {html.escape(item.label)}</h2>" + _study_section(item))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>recsys-kit report</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _public_scores(items: list[Item]) -> dict[str, float]:
    """Recorded public scores (kit lb) of the runs' runs directories."""
    from recsys_kit.submission.ledger import public_scores

    found: dict[str, float] = {}
    for folder in {item.path.resolve().parent for item in items}:
        found.update(public_scores(folder))
    return found


def write_report(paths, out: Path) -> Path:
    """Build the page and write it to `out` by atomic rename (an existing file there is replaced)."""
    out = Path(out)
    if out.is_dir():
        raise DataError(f"--out {out}: is a directory; pass a file name such as {out / 'report.html'}")
    files.check_output_dir(out.parent, "--out")
    page = build_report(paths)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(out, page)
    except OSError as err:
        raise DataError(f"--out {out}: {err.strerror or err}; pass a writable path") from None
    return out
