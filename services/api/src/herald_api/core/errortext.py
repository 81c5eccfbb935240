"""Exceptions as one line of text, for logs and ``outbox.last_error``."""

from __future__ import annotations


def describe(exc: BaseException) -> str:
    """``Type: message`` (just ``Type`` when the message is empty).

    Not ``repr``: redis-py's says only ``network:ConnectionError``, without
    the address or the cause.
    """
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
