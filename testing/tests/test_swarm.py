"""``make swarm-e2e``'s own logic: requests spread over every API replica, and each
log line of ``docker service logs`` credited to the task that wrote it.

The run itself needs a Docker engine (``make swarm-e2e``); these check, against
real HTTP servers and real log text, what it decides from what it sees.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from herald_testing.roundrobin import RoundRobinTransport, api_urls
from herald_testing.swarm_docker import json_lines_by_task


@contextlib.contextmanager
def server(name: str, hosts: list[str]) -> Iterator[str]:
    """A real HTTP server answering each GET with ``name``; the Host headers it got."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hosts.append(str(self.headers["Host"]))
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_each_request_goes_to_the_next_replica_with_its_own_host_header() -> None:
    hosts_a: list[str] = []
    hosts_b: list[str] = []
    with server("a", hosts_a) as url_a, server("b", hosts_b) as url_b:
        transport = RoundRobinTransport([url_a, url_b])
        async with httpx.AsyncClient(base_url=url_a, transport=transport) as client:
            answers = [(await client.get("/health/ready")).text for _ in range(5)]

    assert answers == ["a", "b", "a", "b", "a"]
    assert hosts_a == [url_a.removeprefix("http://")] * 3
    assert hosts_b == [url_b.removeprefix("http://")] * 2


def test_the_url_list_is_read_comma_separated_without_blanks_or_trailing_slashes() -> None:
    assert api_urls(" http://127.0.0.1:1/, http://127.0.0.1:2 ,,") == [
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
    ]
    assert api_urls("") == []


def test_each_service_log_line_is_credited_to_its_task_with_or_without_timestamps() -> None:
    logs = (
        'herald-swarm-x_api.1.aaa111@vm    | {"event": "http.request", "status": 202}\n'
        "2026-12-03T14:48:33.8Z herald-swarm-x_api.2.bbb222@vm    | "
        '{"event": "user.created"}\n'
        "herald-swarm-x_api.2.bbb222@vm    | Traceback (most recent call last):\n"
        "a line without a task prefix\n"
    )

    assert list(json_lines_by_task(logs)) == [
        ("aaa111", {"event": "http.request", "status": 202}),
        ("bbb222", {"event": "user.created"}),
    ]
