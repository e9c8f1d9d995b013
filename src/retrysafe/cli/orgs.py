"""``retrysafe orgs``: create and list organizations."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from retrysafe.cli.database import run_with_database
from retrysafe.cli.names import organization_name
from retrysafe.cli.options import DatabaseOption
from retrysafe.cli.output import Output, OutputOption, print_rows
from retrysafe.database import Database
from retrysafe.service import admin
from retrysafe.settings import DEFAULT_DATABASE_URL

__all__ = ["orgs_app"]

orgs_app = typer.Typer(help="Create and list organizations.", no_args_is_help=True)


@orgs_app.command("create")
def orgs_create(
    name: Annotated[str, typer.Argument(help="Organization name, unique.")],
    inquiry_quota: Annotated[
        int | None,
        typer.Option(
            "--inquiry-quota",
            metavar="N",
            min=0,
            help="Inquiries the organization may create (default: no limit).",
        ),
    ] = None,
    database: DatabaseOption = DEFAULT_DATABASE_URL,
) -> None:
    """Create an organization; for an existing one, set its inquiry quota when given."""
    name = organization_name(name)

    async def create(db: Database) -> tuple[str, bool]:
        return await admin.create_organization(db, name, inquiry_quota=inquiry_quota)

    org_id, created = run_with_database(database, create)
    if created:
        quota = "no inquiry quota" if inquiry_quota is None else f"inquiry quota {inquiry_quota}"
        typer.echo(f"Created organization {name} ({org_id}) with {quota}")
    elif inquiry_quota is None:
        typer.echo(f"Organization {name} ({org_id}) already exists; nothing changed")
    else:
        typer.echo(
            f"Organization {name} ({org_id}) already exists; inquiry quota set to {inquiry_quota}"
        )


@orgs_app.command("list")
def orgs_list(
    output: OutputOption = Output.TEXT, database: DatabaseOption = DEFAULT_DATABASE_URL
) -> None:
    """List organizations by name: id, inquiry quota (- for none) and inquiries used."""

    async def listing(db: Database) -> list[admin.OrganizationListing]:
        return await admin.list_organizations(db)

    organizations = run_with_database(database, listing)
    columns = ("name", "id", "inquiry_quota", "inquiries_used", "created_at")
    print_rows([asdict(organization) for organization in organizations], columns, output)
