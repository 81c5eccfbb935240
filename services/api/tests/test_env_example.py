"""`.env.example` documents every setting of the api."""

from __future__ import annotations

from herald_api.core.settings import Settings
from herald_testing.envdoc import undocumented


def test_every_setting_is_in_env_example() -> None:
    assert undocumented(Settings) == set()
