"""The ``retrysafe`` command line: serve the API and administer organizations, keys and records.

One module per command group, each importing only the shared helpers below it
(``errors``, ``options``, ``database``, ``progress``, ``names``); this module puts
them together under one ``retrysafe`` command and is imported by nothing else.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from typing import Annotated

import typer

from retrysafe.cli import keys, logs, maintenance, orgs, provider, serve
from retrysafe.cli.errors import BadInput, CliError

__all__ = ["BadInput", "CliError", "app", "main"]

app = typer.Typer(
    name="retrysafe",
    help="retrysafe: an HTTP API that is safe to retry, and the tools to run it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: readable in narrow terminals and in logs, and greppable.
    rich_markup_mode=None,
    # -h as well as --help, on every command (click hands it down to subcommands).
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"retrysafe {version('retrysafe')}")
        raise typer.Exit


@app.callback()
def retrysafe(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the installed version and exit.",
        ),
    ] = False,
) -> None:
    """retrysafe: an HTTP API that is safe to retry, and the tools to run it."""


app.command()(serve.serve)
app.command()(provider.provider)
app.add_typer(keys.keys_app, name="keys")
app.add_typer(orgs.orgs_app, name="orgs")
app.command("purge-expired")(maintenance.purge_expired)
app.command()(maintenance.migrate)
app.add_typer(logs.logs_app, name="logs")


def main() -> None:
    """Run the command line; our own errors print one line on stderr, never a traceback.

    Flag parsing errors (unknown option, not a number) keep click's usual usage
    message and exit status 2.
    """
    command = typer.main.get_command(app)
    try:
        command.main(prog_name="retrysafe")
    except CliError as exc:
        typer.echo(f"retrysafe: error: {exc}", err=True)
        sys.exit(exc.exit_code)
