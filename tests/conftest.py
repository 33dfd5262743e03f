"""Suite-wide fixtures."""

from __future__ import annotations

import os
import sys

import pytest


def _reset_ray_auth(mode: str | None) -> None:
    """Put Ray's process-wide auth state back: the env variable and the caches Ray keeps in C++.

    Starting or joining a token-mode cluster sets ``RAY_AUTH_MODE=token`` in this process and caches the
    config and the token; a later module's fresh local Ray would then start with one token and talk with
    another ("InvalidAuthToken"). Only done where Ray is already imported.
    """
    if mode is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = mode
    if "ray._raylet" in sys.modules:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


@pytest.fixture(autouse=True, scope="module")
def _ray_auth_per_module():
    """Each test module starts with the Ray auth state the session started with."""
    before = os.environ.get("RAY_AUTH_MODE")
    _reset_ray_auth(before)
    yield
    _reset_ray_auth(before)
