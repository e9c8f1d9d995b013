"""``retrysafe keys``: create, list and revoke API keys."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from retrysafe.cli.database import run_with_database, shown_database
from retrysafe.cli.errors import BadInput, CliError
from retrysafe.cli.names import organization_name
from retrysafe.cli.options import DatabaseOption
from retrysafe.cli.output import Output, OutputOption, print_rows
from retrysafe.database import Database
from retrysafe.service import admin
from retrysafe.service.api_keys import ALL_SCOPES
from retrysafe.settings import DEFAULT_DATABASE_URL

__all__ = ["keys_app"]

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    org: Annotated[
        str, typer.Option("--org", metavar="NAME", help="Organization name; created when absent.")
    ],
    scopes: Annotated[
        str | None,
        typer.Option(
            "--scopes",
            metavar="SCOPE,…",
            help=f"Comma-separated, default all: {', '.join(ALL_SCOPES)}.",
        ),
    ] = None,
    database: DatabaseOption = DEFAULT_DATABASE_URL,
) -> None:
    """Create an API key and print its secret as the last line (the only time it is shown)."""
    org = organization_name(org)
    chosen = _parse_scopes(scopes)

    async def create(db: Database) -> tuple[str, bool, str, str]:
        org_id, created = await admin.create_organization(db, org)
        key_id, secret = await admin.create_api_key(db, org, scopes=chosen)
        return org_id, created, key_id, secret

    org_id, created, key_id, secret = run_with_database(database, create)
    typer.echo(f"{'Created' if created else 'Using'} organization {org} ({org_id})")
    typer.echo(f"Created API key {key_id} with scopes {','.join(chosen)}")
    typer.echo("Secret (shown only now; only its hash is stored):")
    typer.echo(secret)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id, e.g. key_0123456789abcdef.")],
    database: DatabaseOption = DEFAULT_DATABASE_URL,
) -> None:
    """Revoke an API key; requests that present it get 401 from now on."""

    async def revoke(db: Database) -> bool:
        return await admin.revoke_api_key(db, key_id)

    if not run_with_database(database, revoke):
        raise CliError(f"no API key with id {key_id!r} in {shown_database(database)}")
    typer.echo(f"Revoked API key {key_id}")


@keys_app.command("list")
def keys_list(
    org: Annotated[
        str | None, typer.Option("--org", metavar="NAME", help="Only this organization's keys.")
    ] = None,
    output: OutputOption = Output.TEXT,
    database: DatabaseOption = DEFAULT_DATABASE_URL,
) -> None:
    """List API keys, oldest first: id, organization, scopes, created, revoked; never secrets."""

    async def listing(db: Database) -> list[admin.ApiKeyListing]:
        return await admin.list_api_keys(db, org)

    keys = run_with_database(database, listing)
    # The scopes last: the one wide column, so the others stay aligned on a narrow terminal.
    columns = ("id", "organization", "organization_id", "created_at", "revoked_at", "scopes")
    print_rows([asdict(key) for key in keys], columns, output)


def _parse_scopes(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ALL_SCOPES
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [scope for scope in chosen if scope not in ALL_SCOPES]
    if unknown or not chosen:
        problem = f"unknown scope {', '.join(map(repr, unknown))}" if unknown else "no scope given"
        raise BadInput(f"--scopes: {problem}; choose from {','.join(ALL_SCOPES)}")
    return chosen
