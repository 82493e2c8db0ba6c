"""`kit report RUN ...`: one self-contained HTML page of plots; prints the page's path last."""
from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, exit_on_bad_input


def report(
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR", show_default=False,
                                                    help="Run directories from kit cv or kit ensemble, and/or "
                                                         "study directories from kit tune")],
    out: Annotated[Path, typer.Option(help="HTML file to write (replaced if it exists)")] = Path("report.html"),
):
    """Write one HTML page (no network needed): training curves, fold spread, Recall@10 by user
    activity, blend weights and held-out gain, a study's history and importances."""
    with exit_on_bad_input():
        from recsys_kit import api  # matplotlib loads with the report, not with `kit --help`

        with console.status("drawing the report"):
            path = api.report(run_dirs, out)
    console.print(f"wrote {path} ({path.stat().st_size / 1024:,.0f} KiB)")
    typer.echo(str(path))
