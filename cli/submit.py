"""`kit submit` (run -> contest CSV, validated) and `kit validate` (check a CSV)."""
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import console, exit_on_bad_input


def submit(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR",
                                            help="A run directory written by kit cv or kit ensemble")],
    out: Annotated[Optional[Path], typer.Option(help="CSV to write (default submissions/<run>.csv)")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing CSV")] = False,
    time_filter: Annotated[bool, typer.Option(help="Push items first seen after a user's last interaction "
                                                   "(plus the margin fitted on OOF) below the others")] = False,
):
    """Write the top-10 unseen items per user from the run's test scores."""
    from recsys_kit import api  # pandas comes with it: not for `kit --help`

    with exit_on_bad_input():
        with console.status("ranking"):
            summary = api.submit_summary(run_dir, out, force=force, time_filter=time_filter)
    console.print(f"wrote {summary['rows']:,} rows for {summary['users']:,} users"
                  + (f"; time filter {summary['time_filter']}" if summary["time_filter"] else ""))
    typer.echo(summary["path"])


def validate(
    csv: Annotated[Path, typer.Argument(metavar="CSV", help="Submission CSV")],
    data: Annotated[Path, typer.Option(help="Contest-layout folder the submission is for")],
):
    """Check a submission against the contest's rules; exit 1 and list every broken rule."""
    from recsys_kit import api

    with exit_on_bad_input():
        problems = api.validate(csv, data)
    if problems:
        for problem in problems:
            typer.echo(f"invalid: {problem}", err=True)
        raise typer.Exit(1)
    typer.echo(f"valid: {csv}")
