"""`kit synth`: write a synthetic data set in the contest layout."""
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import console, exit_on_bad_input


def synth(
    out_dir: Annotated[Path, typer.Argument(
        metavar="OUT_DIR", help="Directory to create; it must not exist or be empty (files are never overwritten).")],
    users: Annotated[int, typer.Option(help="Number of users (each gets at least 15 interactions).")] = 3000,
    items: Annotated[int, typer.Option(help="Number of catalogue items (at least 30).")] = 1200,
    interactions: Annotated[int, typer.Option(
        help="Total interactions, between 15*users and users*items/2.")] = 150_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical files.")] = 0,
):
    """Write a contest-layout synthetic data set (train_ratings.csv + side files)."""
    from recsys_kit import api  # pandas: not for `kit --help`

    with exit_on_bad_input():
        with console.status(f"Generating {interactions:,} interactions for {users:,} users "
                            f"x {items:,} items ..."):
            summary = api.synthesize(out_dir, users=users, items=items, interactions=interactions, seed=seed)
        table = Table(title="synthetic data", show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_row("users", f"{summary['users']:,}")
        table.add_row("items", f"{summary['items']:,} of {summary['catalog_items']:,}")
        table.add_row("interactions", f"{summary['interactions']:,}")
        table.add_row("seed", str(seed))
        table.add_row("files", ", ".join(summary["files"]))
        table.add_row("written to", summary["path"])
        console.print(table)
    typer.echo(str(out_dir))
