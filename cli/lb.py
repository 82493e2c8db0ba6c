"""`kit lb [RUN_DIR|CSV SCORE]`: record a public leaderboard score; alone, list the ledger."""
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.common import console, exit_on_bad_input


def lb(
    target: Annotated[Optional[Path], typer.Argument(metavar="[RUN_DIR|CSV]", show_default=False,
                                                     help="The submitted CSV (kit submit recorded its digest) or "
                                                          "its run directory")] = None,
    score: Annotated[Optional[float], typer.Argument(metavar="[SCORE]", show_default=False,
                                                     help="The public leaderboard's Recall@10 for it")] = None,
    note: Annotated[Optional[str], typer.Option(help="A word to remember it by")] = None,
    runs_dir: Annotated[Path, typer.Option(help="The runs directory whose ledger.jsonl to read or add to "
                                                "(a run directory's own parent when RUN_DIR is given)")] = Path("runs"),
):
    """Record a public leaderboard score (append-only, runs/ledger.jsonl); `kit runs` then shows it beside
    OOF and calibrates every other run's estimate on it. Without arguments: list the ledger."""
    from recsys_kit import api

    with exit_on_bad_input():
        if target is None:
            records = api.ledger(runs_dir)
        elif score is None:
            from recsys_kit.errors import DataError

            raise DataError(f"{target}: give the public score too, e.g. kit lb {target} 0.1523")
        else:
            record = api.record_public(target, score, runs_dir=runs_dir, note=note)
    if target is not None:
        console.print(f"recorded public Recall@10 {record['score']:.4f} for {Path(record['run']).name}")
        typer.echo(record["run"])
        return
    table = Table(title=f"{len(records)} record(s) in {runs_dir / 'ledger.jsonl'}")
    for column in ("when", "what", "run", "public", "note"):
        table.add_column(column, no_wrap=column != "note", justify="right" if column == "public" else "left")
    for record in records:
        public = f"{record['score']:.4f}" if record.get("kind") == "public" else ""
        what = "submitted" if record.get("kind") == "submit" else "public score"
        table.add_row(record.get("at", ""), what, Path(record.get("run", "?")).name, public,
                      record.get("note") or (Path(record["csv"]).name if record.get("csv") else ""))
    console.print(table)
