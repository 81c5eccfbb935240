"""The pages emailed links open: they read the token from the URL fragment only,
and run nothing but their own script."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest


@pytest.mark.parametrize(
    ("page", "posts_to"),
    [("/verify-email", "/api/v1/auth/verify"), ("/reset-password", "/api/v1/auth/password/reset")],
)
async def test_a_link_page_reads_the_token_from_the_fragment_only(
    client: httpx.AsyncClient, page: str, posts_to: str
) -> None:
    response = await client.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'sha256-" in policy
    assert "form-action 'none'" in policy
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert "location.hash" in response.text
    assert "history.replaceState" in response.text
    assert posts_to in response.text


async def test_the_reset_page_asks_for_a_new_password(client: httpx.AsyncClient) -> None:
    response = await client.get("/reset-password")

    assert 'type="password"' in response.text
    assert 'autocomplete="new-password"' in response.text


async def test_each_page_allows_exactly_its_own_script(client: httpx.AsyncClient) -> None:
    """The hash in the CSP is the inline script's: a changed script without a changed
    hash would be blocked by every browser."""
    for page in ("/verify-email", "/reset-password"):
        response = await client.get(page)
        [script] = re.findall(r"<script>(.*?)</script>", response.text, flags=re.S)
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"script-src 'sha256-{digest}'" in response.headers["Content-Security-Policy"]
