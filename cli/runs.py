"""`kit runs`: every run in one table, best first."""
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.common import console, exit_on_bad_input, number
from recsys_kit.report.run_table import SORT_KEYS


def runs(
    runs_dir: Annotated[Path, typer.Option(help="Where kit cv / kit ensemble wrote their runs")] = Path("runs"),
    data: Annotated[Optional[Path], typer.Option(help="Only runs on this contest folder's data")] = None,
    sort: Annotated[str, typer.Option(help=f"Order: {' | '.join(SORT_KEYS)}")] = "recall",
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON instead of a table")] = False,
):
    """List every run: OOF Recall@10 +- std, leaderboard estimate, NDCG@10, wall, date and settings."""
    from recsys_kit import api

    with exit_on_bad_input():
        with console.status("reading data") if data is not None else nullcontext():
            rows = api.runs_table(runs_dir, data, sort)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} run(s) in {runs_dir}")
    for column, justify in (("run", "left"), ("model", "left"), ("data", "left"), ("folds", "right"),
                            ("Recall@10", "right"), ("LB est.", "right"), ("NDCG@10", "right"),
                            ("wall", "right"), ("date", "left"), ("settings", "left")):
        # Nothing is cut with an ellipsis (two runs must never look alike): long cells fold.
        table.add_column(column, justify=justify, overflow="fold")
    for row in rows:
        if row["status"] != "finished":
            table.add_row(row["name"], f"[yellow]{row['status']}", row.get("data") or "", "", "", "", "", "", "",
                          row.get("note", ""))
            continue
        recall = "n/a" if row["recall"] is None else f"{row['recall']:.4f} +- {row['recall_std'] or 0:.4f}"
        settings = ", ".join(f"{key}={value}" for key, value in row["changes"].items())
        if row.get("holdout_half") is not None:
            settings = f"held-out half {row['holdout_half']:.4f}; " + settings
        table.add_row(row["name"], row["model"] or "?", row["data"] or "", str(row["folds"]), recall,
                      number(row["lb_estimate"]), number(row["ndcg"]),
                      "" if row["wall_seconds"] is None else f"{row['wall_seconds']:.0f} s", row["date"], settings)
    console.print(table)
