"""`kit convert FORMAT SRC OUT_DIR`: turn a public data set into the kit's contest layout."""
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import console, exit_on_bad_input


def convert(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT",
                                       help="movielens-100k | movielens-1m | movielens-latest | s3rec")],
    src: Annotated[Path, typer.Argument(metavar="SRC", help="The data set folder (MovieLens formats) or the <name>.txt file "
                                             "(s3rec, with <name>_item2attributes.json beside it).")],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", help="New or empty folder for train_ratings.csv and the side "
                                                 "files; existing files are never overwritten.")],
):
    """Convert a public data set into the contest layout (train_ratings.csv user,item,time + side .tsv files).

    The table on stderr lists the counts and notes (e.g. where `time` comes from when the source has no timestamps); the last line of stdout is OUT_DIR.
    """
    from recsys_kit import api  # pandas: not for `kit --help`

    with exit_on_bad_input():
        summary = api.convert(fmt, src, out_dir)

    table = Table(title=f"convert {summary['format']}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("source", str(src))
    table.add_row("users", f"{summary['users']:,}")
    table.add_row("items", f"{summary['items']:,}")
    table.add_row("interactions", f"{summary['interactions']:,}")
    for name, rows in summary["side_files"].items():
        table.add_row(name, f"{rows:,} rows")
    for note in summary["notes"]:
        table.add_row("note", note)
    console.print(table)
    typer.echo(str(out_dir))
