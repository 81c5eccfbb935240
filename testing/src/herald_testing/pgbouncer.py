"""A real PgBouncer in transaction mode in front of a test's PostgreSQL.

Debian's ``pgbouncer`` package (1.18 on Debian 12: older than 1.21, so it does
not track prepared statements). It serves every database of the server
(``* =``), with ``server_pool_size`` server connections per database: with one,
every client's transactions take turns on the same server connection, so a
prepared statement left behind by one client is seen by the next, as in
production under load.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from herald_testing.ports import free_port, wait_for_port
from herald_testing.processes import server_process

DEBIAN_BINARY = Path("/usr/sbin/pgbouncer")


def pgbouncer_binary() -> str | None:
    """The ``pgbouncer`` executable, or None where the package is not installed."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return str(DEBIAN_BINARY) if DEBIAN_BINARY.exists() else None


def _quote(value: str) -> str:
    # pgbouncer.ini connection strings take libpq's single-quoted values.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextmanager
def pgbouncer(postgres_url: str, *, server_pool_size: int = 1) -> Iterator[str]:
    """Run PgBouncer (pool_mode=transaction) in front of ``postgres_url``'s server; yield
    ``postgres_url`` pointed at it instead (same user and database)."""
    binary = pgbouncer_binary()
    if binary is None:
        raise FileNotFoundError("pgbouncer is not installed (Debian: apt install pgbouncer)")
    server = make_url(postgres_url)
    user = server.username or "postgres"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="herald-pgbouncer-") as workdir:
        directory = Path(workdir)
        # Read by PgBouncer after it dropped root (-u nobody below).
        directory.chmod(0o755)
        userlist = directory / "userlist.txt"
        userlist.write_text(f'"{user}" ""\n')
        target = f"host={server.host or '127.0.0.1'} port={server.port or 5432} user={user}"
        if server.password:
            target += f" password={_quote(server.password)}"
        config = directory / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = {target}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            "unix_socket_dir =\n"
            # Clients are the tests themselves, on loopback; the server side
            # authenticates with the server URL's own credentials.
            "auth_type = trust\n"
            f"auth_file = {userlist}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {server_pool_size}\n"
            "max_client_conn = 500\n"
            "server_login_retry = 1\n"
        )
        for path in (userlist, config):
            path.chmod(0o644)
        # PgBouncer refuses to run as root (CI runs as root): drop to nobody.
        run_as = ["-u", "nobody"] if os.geteuid() == 0 else []
        with server_process([binary, *run_as, str(config)], directory, "pgbouncer"):
            wait_for_port("127.0.0.1", port, timeout=10.0, what="pgbouncer")
            yield server.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
