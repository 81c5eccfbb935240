"""Types of the HTTP-client fixtures services' tests share."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx

OpenClient = Callable[[Any], AbstractAsyncContextManager[httpx.AsyncClient]]
"""Opens an HTTP client of a service's app built from the settings it is given."""
