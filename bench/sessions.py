"""What sessions cost: a refresh, and the session check on every authenticated request.

    uv run --group bench python -m bench.sessions

``make bench`` prints it under item 2 (``measure_sessions``, on the API it
measured signups on); run alone, it starts ``herald-api serve`` on a fresh
database ``herald_bench_<id>`` (dropped at the end). One verified account,
inserted in SQL, logs in; then, one request at a time:

- ``refresh``: ``POST /api/v1/auth/refresh`` with the token the previous one
  answered (each one rotates, and retires the token before);
- ``me``: ``GET /api/v1/users/me`` with the session's access token (the user and
  its session read in one join), then with a token of the same user without a
  ``sid`` (the user alone: what the check adds is the difference), interleaved.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from bench.common import BIN, PASSWORD, Processes, migrate, ms, percentile, wait_ready
from herald_api.auth.tokens import AccessClaims, AccessTokens
from herald_api.core.settings import Settings as ApiSettings
from herald_testing.accounts import add_user
from herald_testing.ports import free_port

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/herald"
EMAIL = "sessions-bench@example.com"


async def add_verified_user(database_url: str) -> uuid.UUID:
    """A verified account with ``PASSWORD``, hashed with the API's argon2id parameters."""
    db = await asyncpg.connect(database_url)
    try:
        return await add_user(
            db, ApiSettings(), email=EMAIL, password=PASSWORD, display_name="Bench"
        )
    finally:
        await db.close()


async def timed(request: httpx.Request, client: httpx.AsyncClient) -> tuple[float, httpx.Response]:
    began = time.perf_counter()
    response = await client.send(request)
    return time.perf_counter() - began, response


async def measure_sessions(
    client: httpx.AsyncClient, database_url: str, *, jwt_secret: str, samples: int
) -> dict[str, float]:
    """Figures in ms: refresh p50/p95, ``/users/me`` p50 with and without the check."""
    user_id = await add_verified_user(database_url)
    login = await client.post("/api/v1/auth/token", data={"username": EMAIL, "password": PASSWORD})
    login.raise_for_status()
    pair = login.json()
    refreshes: list[float] = []
    for _ in range(samples + 20):
        request = client.build_request(
            "POST", "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        seconds, response = await timed(request, client)
        response.raise_for_status()
        pair = response.json()
        refreshes.append(seconds)
    refreshes = refreshes[20:]  # warm-up
    legacy = AccessTokens(secret=SecretStr(jwt_secret), ttl_seconds=900).issue(
        AccessClaims(user_id=user_id, version=0)
    )
    tokens = {"with": pair["access_token"], "without": legacy.token}
    me: dict[str, list[float]] = {"with": [], "without": []}
    for round_ in range(samples + 20):
        for kind, token in tokens.items():
            request = client.build_request(
                "GET", "/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}
            )
            seconds, response = await timed(request, client)
            response.raise_for_status()
            if round_ >= 20:
                me[kind].append(seconds)
    return {
        "refresh_p50_ms": 1000 * statistics.median(refreshes),
        "refresh_p95_ms": 1000 * percentile(refreshes, 0.95),
        "me_with_session_p50_ms": 1000 * statistics.median(me["with"]),
        "me_without_session_p50_ms": 1000 * statistics.median(me["without"]),
    }


def describe(figures: dict[str, float]) -> list[tuple[str, str, str]]:
    """Rows for the table: measure, value, note."""
    added = figures["me_with_session_p50_ms"] - figures["me_without_session_p50_ms"]
    return [
        (
            "refresh (rotation), one at a time",
            f"p50 {ms(figures['refresh_p50_ms'] / 1000)}, "
            f"p95 {ms(figures['refresh_p95_ms'] / 1000)}",
            "POST /api/v1/auth/refresh over HTTP to uvicorn",
        ),
        (
            "GET /users/me: with the session check / without",
            f"p50 {ms(figures['me_with_session_p50_ms'] / 1000)} / "
            f"{ms(figures['me_without_session_p50_ms'] / 1000)}",
            f"the check adds {added * 1000:+.0f} µs per authenticated request",
        ),
    ]


async def main(samples: int = 500) -> None:
    run_id = uuid.uuid4().hex[:8]
    base = make_url(os.environ.get("HERALD_DATABASE_URL", DEFAULT_DATABASE_URL))
    database = f"herald_bench_{run_id}"
    database_url = base.set(drivername="postgresql", database=database).render_as_string(
        hide_password=False
    )
    admin_url = base.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    port = free_port()
    jwt_secret = secrets.token_urlsafe(48)
    env = dict(os.environ) | {
        "HERALD_DATABASE_URL": database_url,
        "HERALD_API_PORT": str(port),
        "HERALD_METRICS_PORT": "0",
        "HERALD_QUEUE_NAMESPACE": f"bench_{run_id}_sessions",
        "HERALD_LINK_SECRET": secrets.token_urlsafe(48),
        "HERALD_JWT_SECRET": jwt_secret,
        "HERALD_RATE_LIMITS_ENABLED": "false",
    }
    # For ApiSettings() in this process (the argon2id parameters), as ``python -m bench``.
    os.environ.update({k: env[k] for k in ("HERALD_LINK_SECRET", "HERALD_JWT_SECRET")})
    log_dir = tempfile.mkdtemp(prefix=f"herald-bench-sessions-{run_id}-")
    procs = Processes(env=env, log_dir=Path(log_dir))
    migrate(env, procs.log_dir / "migrate.log")
    try:
        procs.start("api", str(BIN / "herald-api"), "serve")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await wait_ready(client, "/health/ready")
            figures = await measure_sessions(
                client, database_url, jwt_secret=jwt_secret, samples=samples
            )
    finally:
        procs.stop_all()
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()
    for measure, value, note in describe(figures):
        print(f"{measure:<50} {value:<28} {note}")


if __name__ == "__main__":
    asyncio.run(main())
