"""The `kit` command: one thin file per command, registered here."""
import typer

from cli.common import app_options
from cli.convert import convert
from cli.cv import cv
from cli.ensemble import ensemble
from cli.lb import lb
from cli.report import report
from cli.runs import runs
from cli.stack import stack
from cli.submit import submit, validate
from cli.synth import synth
from cli.tune import tune

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="recsys-kit: honest K-fold recommenders for top-10 contests.")
app.callback()(app_options)  # --version
app.command()(synth)
app.command()(convert)
app.command()(cv)
app.command()(tune)
app.command()(ensemble)
app.command()(stack)
app.command()(submit)
app.command()(validate)
app.command()(lb)
app.command()(runs)
app.command()(report)

if __name__ == "__main__":
    app()
