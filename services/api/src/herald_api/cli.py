"""``herald-api``: serve the API, migrate its database, or wait for its schema."""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvicorn

from herald_api.core.migrate import migrate, wait_for_schema
from herald_api.core.settings import get_settings
from herald_shared.logs import configure_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="herald-api", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API under uvicorn")
    serve.add_argument("--host", help="bind address (default: HERALD_API_HOST)")
    serve.add_argument("--port", type=int, help="port (default: HERALD_API_PORT)")
    commands.add_parser("migrate", help="create the database if missing; alembic upgrade head")
    wait = commands.add_parser(
        "wait-for-schema",
        help="exit 0 once the database carries this image's schema (or newer), 1 after --timeout",
    )
    wait.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    args = parser.parse_args(argv)

    settings = get_settings()
    configure_logging(service="api", level=settings.log_level, fmt=settings.log_format)
    if args.command == "migrate":
        migrate(settings)
        return
    if args.command == "wait-for-schema":
        sys.exit(0 if asyncio.run(wait_for_schema(settings, within=args.timeout)) else 1)
    uvicorn.run(
        "herald_api.main:create_app",
        factory=True,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        log_config=None,
        access_log=False,
        timeout_keep_alive=settings.keep_alive_seconds,
        proxy_headers=True,
        # Explicit, so the setting (not uvicorn's own FORWARDED_ALLOW_IPS) decides.
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


if __name__ == "__main__":
    main()
