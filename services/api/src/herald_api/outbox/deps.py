"""The outbox's FastAPI dependency: its parts, as the composition root opened them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from herald_api.outbox.runtime import Outbox


async def get_outbox(request: Request) -> Outbox:
    outbox: Outbox = request.app.state.outbox
    return outbox


OutboxDep = Annotated[Outbox, Depends(get_outbox)]
