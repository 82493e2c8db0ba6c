"""`kit runs`: every run in one table, best first, that reads at 80 columns and in a pipe.

A run's name and every number stay whole on one line: the columns never wrap. What does not fit
the width moves instead, least important first (date, wall, folds, data, NDCG@10, model, then the
leaderboard estimate and the public score), onto the dim line under the run's row, which also holds
its settings (what the run changed from its model's defaults) or, for a run that is not finished,
why. A column with nothing in it (no public score recorded yet) is left out. Only a name wider than
the whole screen folds over lines of its cell, whole, never cut with an ellipsis. `--wide` puts the
settings back into a column and keeps every column, one line per run, however wide that gets.
"""
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.text import Text

from cli.common import console, exit_on_bad_input, number
from recsys_kit.report.run_table import SORT_KEYS

FINGERPRINT_CHARS = 7  # like a short git hash: enough to tell data sets apart
# (header, justify), in the order they read; "settings" only with --wide.
COLUMNS = (("run", "left"), ("model", "left"), ("data", "left"), ("folds", "right"), ("Recall@10", "right"),
           ("public", "right"), ("LB est.", "right"), ("NDCG@10", "right"), ("wall", "right"), ("date", "left"),
           ("settings", "left"))
ALWAYS = ("run", "Recall@10")
# Kept while they fit, first to last; the first that does not fit and all after it go onto the line
# under the row. The figures that compare runs come first; the model is usually in the run's name.
KEEP_ORDER = ("public", "LB est.", "model", "NDCG@10", "data", "folds", "wall", "date")
# How a column's value reads on that line.
ON_DETAIL_LINE = {"model": "{}", "data": "data {}", "folds": "{} folds", "public": "public {}",
                  "LB est.": "LB est. {}", "NDCG@10": "NDCG@10 {}", "wall": "wall {}", "date": "{}"}
MIN_RUN_WIDTH = 8  # a name longer than the room left folds (whole, never cut) at no less than this


def runs(
    runs_dir: Annotated[Path, typer.Option(help="Where kit cv / kit ensemble wrote their runs")] = Path("runs"),
    data: Annotated[Optional[Path], typer.Option(help="Only runs on this contest folder's data")] = None,
    sort: Annotated[str, typer.Option(help=f"Order: {' | '.join(SORT_KEYS)}")] = "recall",
    wide: Annotated[bool, typer.Option("--wide", help="Every column on the run's own line, settings included, "
                                                      "however wide the table gets")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON instead of a table")] = False,
):
    """List every run: OOF Recall@10 ± std, public score and leaderboard estimate, NDCG@10, data, wall,
    date; its settings on a line under it (in a column with --wide)."""
    from recsys_kit import api

    with exit_on_bad_input():
        with console.status("reading data") if data is not None else nullcontext():
            rows = api.runs_table(runs_dir, data, sort)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    print_runs(rows, f"{len(rows)} run(s) in {runs_dir}", console, wide=wide)


def print_runs(rows: list[dict], title: str, out: Console, wide: bool = False) -> None:
    """The runs table on `out`, laid out for its width (lines are only wider with --wide, never cropped)."""
    out.print(RunsTable(rows, title, wide), crop=False)


def render_runs(rows: list[dict], title: str = "runs", width: int = 80, wide: bool = False) -> str:
    """The table as plain text at `width` columns, as a pipe gets it."""
    import io

    buffer = io.StringIO()
    print_runs(rows, title, Console(width=width, file=buffer, force_terminal=False, color_system=None), wide)
    return buffer.getvalue()


# ---------------------------------------------------------------------------- cells

def row_cells(row: dict, plus_minus: str = "±") -> dict:
    """Each column's text for one row of collect_runs (recsys_kit.report.run_table)."""
    fingerprint = (row.get("data") or "")[:FINGERPRINT_CHARS]
    if row["status"] != "finished":  # running | unfinished | damaged: where the score would be
        return {"run": row["name"], "data": fingerprint, "Recall@10": row["status"], "settings": row.get("note") or ""}
    recall = "n/a" if row["recall"] is None else f"{row['recall']:.4f} {plus_minus} {row['recall_std'] or 0:.4f}"
    calibrated = row.get("calibrated")
    estimate = number(row.get("lb_estimate")) if calibrated is None else f"{calibrated:.4f} cal."
    settings = [f"{key}={value}" for key, value in (row.get("changes") or {}).items()]
    if row.get("holdout_half") is not None:
        settings.insert(0, f"held-out half {row['holdout_half']:.4f};")
    wall = row.get("wall_seconds")
    return {"run": row["name"], "model": row.get("model") or "?", "data": fingerprint, "folds": str(row["folds"]),
            "Recall@10": recall, "public": number(row.get("public")), "LB est.": estimate,
            "NDCG@10": number(row.get("ndcg")), "wall": "" if wall is None else f"{wall:.0f} s",
            "date": row.get("date") or "", "settings": settings}


def pieces(value) -> list[str]:
    """A settings cell as the pieces a line may break between ("k=v" pairs are never split)."""
    if isinstance(value, str):
        return [value] if value else []
    return [f"{piece}," if i < len(value) - 1 and not piece.endswith(";") else piece
            for i, piece in enumerate(value)]


def fold(word: str, width: int) -> list[str]:
    """A word longer than `width` over several lines, after a - _ / . when one is near (never cut)."""
    parts = []
    while cell_len(word) > width:
        cut = max((i + 1 for i, ch in enumerate(word[:width]) if ch in "-_/."), default=0)
        cut = cut if cut >= width // 2 else width
        parts.append(word[:cut])
        word = word[cut:]
    return parts + [word]


def flow(words: list, width: int) -> list[str]:
    """Greedy lines of at most `width` cells from whole words, each a str (joined by a space) or a
    (separator, word) pair; a line never starts with a separator, a word wider than a line folds."""
    lines: list[str] = []
    current = ""
    for word in words:
        separator, word = word if isinstance(word, tuple) else (" ", word)
        candidate = f"{current}{separator}{word}" if current else word
        if cell_len(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        *full, current = fold(word, width)
        lines.extend(full)
    return lines + ([current] if current else [])


# ---------------------------------------------------------------------------- the table

class RunsTable:
    """A rich renderable: the header and one line per run, then its dim detail line (settings, the
    note of a run that is not finished, and the columns that did not fit), all within the width."""

    def __init__(self, rows: list[dict], title: str, wide: bool = False):
        self.rows, self.title, self.wide = rows, title, wide

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        ascii_only = options.ascii_only
        frame = box.HEAVY_HEAD.substitute(options)
        dot = " - " if ascii_only else " · "
        cells = [row_cells(row, "+/-" if ascii_only else "±") for row in self.rows]
        # A column with nothing in it (no public score recorded, no run with an estimate) takes no room.
        columns = [name for name, _ in COLUMNS if name in ALWAYS or (name == "settings" and self.wide)
                   or (name != "settings" and any(c.get(name) not in (None, "", "n/a") for c in cells))]
        natural = {name: max([cell_len(name)] + [cell_len(self._one_line(c.get(name, ""))) for c in cells])
                   for name in columns}

        shown, widths = self._layout(columns, natural, width)
        table_width = sum(widths[name] + 3 for name in shown) + 1
        details = [] if self.wide else [self._detail(c, shown, dot) for c in cells]
        longest_detail = max([cell_len(flow(d, 10**6)[0]) for d in details if d] + [0])
        if longest_detail + 6 > table_width and table_width < width:  # room to spare: give it to the names
            extra = min(width, longest_detail + 6) - table_width
            widths["run"] += extra
            table_width += extra

        justify = dict(COLUMNS)
        yield from self._title(console, table_width, width)
        padded = [widths[name] + 2 for name in shown]
        yield Segment(frame.get_top(padded) + "\n")
        header = Text(frame.head_left)
        for i, name in enumerate(shown):
            header.append(" " + self._pad(name, widths[name], justify[name]) + " ", style="bold")
            header.append(frame.head_vertical if i < len(shown) - 1 else frame.head_right)
        yield from header.render(console, end="\n")
        yield Segment(frame.get_row(padded, "head") + "\n")
        for row, cell, detail in zip(self.rows, cells, details or [None] * len(cells)):
            yield from self._row(console, frame, row, cell, shown, widths, justify)
            if detail:
                inner = table_width - 4
                for line in flow(detail, inner - 2):
                    text = Text(frame.mid_left + " ")
                    text.append(self._pad("  " + line, inner, "left"), style="dim")
                    text.append(" " + frame.mid_right)
                    yield from text.render(console, end="\n")
        yield Segment(frame.get_bottom(padded) + "\n")

    # ------------------------------------------------------------------ layout

    @staticmethod
    def _one_line(value) -> str:
        return " ".join(pieces(value)) if isinstance(value, list) else value

    def _layout(self, columns: list[str], natural: dict, width: int) -> tuple[list[str], dict]:
        """Which columns show, and each one's width (cells, no padding)."""
        widths = dict(natural)

        def total(names):
            return sum(widths[name] + 3 for name in names) + 1

        if self.wide:  # every column, one line per run, as wide as it takes (for wide terminals, files, grep)
            return columns, widths
        chosen = set(ALWAYS)
        room = width - total(["Recall@10"]) - 3
        widths["run"] = min(natural["run"], max(MIN_RUN_WIDTH, room))  # only a name wider than the screen folds
        for name in KEEP_ORDER:  # the first that does not fit ends it: columns go least important first
            if name not in columns:
                continue
            if total([c for c in columns if c in chosen or c == name]) > width:
                break
            chosen.add(name)
        return [name for name in columns if name in chosen], widths

    def _detail(self, cell: dict, shown: list[str], dot: str) -> list[tuple[str, str]]:
        """What goes on the line under the row, as (separator, word) pairs for `flow`: the columns
        not shown, then the settings or the note."""
        words = [(dot, ON_DETAIL_LINE[name].format(cell[name])) for name in ON_DETAIL_LINE
                 if name not in shown and cell.get(name) not in (None, "", "n/a")]
        for i, piece in enumerate(pieces(cell.get("settings", ""))):
            words.append((dot if i == 0 else " ", piece))
        return words

    # ------------------------------------------------------------------ drawing

    @staticmethod
    def _pad(text: str, width: int, justify: str) -> str:
        gap = " " * max(0, width - cell_len(text))
        return gap + text if justify == "right" else text + gap

    def _title(self, console: Console, table_width: int, width: int) -> RenderResult:
        if cell_len(self.title) <= table_width:  # centred over the table, as rich puts a title
            lines = [" " * ((table_width - cell_len(self.title)) // 2) + self.title]
        else:
            lines = flow(self.title.split(" "), width)
        for line in lines:
            yield from Text(line, style="italic").render(console, end="\n")

    def _row(self, console, frame, row: dict, cell: dict, shown: list[str], widths: dict,
             justify: dict) -> RenderResult:
        """One run's line; more only when a name is wider than the screen or (--wide) settings wrap."""
        stacked = {}
        for name in shown:
            value = cell.get(name, "")
            if name == "run":
                stacked[name] = fold(value, widths[name])
            elif name == "settings":
                stacked[name] = [" ".join(pieces(value))]
            else:
                stacked[name] = [value]
        for k in range(max(len(lines) for lines in stacked.values())):
            text = Text(frame.mid_left)
            for i, name in enumerate(shown):
                lines = stacked[name]
                value = lines[k] if k < len(lines) else ""
                status = name == "Recall@10" and row["status"] != "finished"
                text.append(" ")
                text.append(self._pad(value, widths[name], justify[name]), style="yellow" if status else "")
                text.append(" " + (frame.mid_right if i == len(shown) - 1 else frame.mid_vertical))
            yield from text.render(console, end="\n")
