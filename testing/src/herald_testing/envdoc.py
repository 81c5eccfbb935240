"""Keep ``.env.example`` true: every setting of every service is documented there."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_settings import BaseSettings

ENV_EXAMPLE = Path(__file__).resolve().parents[3] / ".env.example"


def documented_variables() -> set[str]:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    return set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def undocumented(settings: type[BaseSettings]) -> set[str]:
    """Environment variables of ``settings`` that ``.env.example`` does not mention."""
    prefix = settings.model_config.get("env_prefix", "")
    wanted = {f"{prefix}{name}".upper() for name in settings.model_fields}
    return wanted - documented_variables()
