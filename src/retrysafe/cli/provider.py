"""``retrysafe provider``: the reference upstream provider as its own HTTP service."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from retrysafe.config import env_name

__all__ = ["provider"]


def _provider_option(flag: str, help: str, **kwargs: Any) -> Any:
    # RETRYSAFE_PROVIDER_*: a shell that configures `serve` (RETRYSAFE_PORT…) must not
    # move the provider onto the same port.
    return typer.Option(f"--{flag}", envvar=env_name(f"provider-{flag}"), help=help, **kwargs)


def provider(
    host: Annotated[str, _provider_option("host", "Address to listen on.", metavar="HOST")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, _provider_option("port", "Port to listen on.", metavar="PORT", min=0, max=65535)
    ] = 8001,
    delay: Annotated[
        float,
        _provider_option(
            "delay", "Seconds each check takes before its answer.", metavar="SECONDS", min=0.0
        ),
    ] = 0.0,
    fail_rate: Annotated[
        float,
        _provider_option(
            "fail-rate",
            "Share of requests answered with a failure (500 or a non-JSON body).",
            metavar="0..1",
            min=0.0,
            max=1.0,
        ),
    ] = 0.0,
) -> None:
    """Run the reference upstream provider; GET /stats answers {"checks_run": N}.

    Checks are kept in memory by Idempotency-Key: a repeated key is answered
    from its record, not run again. Records are lost when the process stops.
    """
    import uvicorn

    from retrysafe.provider.app import create_provider_app
    from retrysafe.provider.upstream import ReferenceProvider

    typer.echo(
        f"retrysafe: provider on http://{host}:{port} (delay {delay:g} s, fail rate {fail_rate:g})",
        err=True,
    )
    uvicorn.run(
        create_provider_app(ReferenceProvider(delay=delay, fail_rate=fail_rate)),
        host=host,
        port=port,
        log_level="warning",
        server_header=False,
        access_log=False,
    )
