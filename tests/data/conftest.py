"""Shared fixtures for the data-layer tests: a tiny EMT dataset generated once per session."""

from __future__ import annotations

import pytest
import torch

from engine.data.emt import load_emt_dataset


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def emt_cache(tmp_path_factory: pytest.TempPathFactory):
    """(cache folder, 40 EMT structures of seed 7) — generated once, cached as .aselmdb."""
    folder = tmp_path_factory.mktemp("emt-cache")
    return folder, load_emt_dataset(40, seed=7, cache_dir=folder, progress=False)
