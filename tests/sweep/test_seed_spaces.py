"""The seed study's space files (search_spaces/seed/) load, and the CPU pieces keep the issue's bars."""

import math
from pathlib import Path

import pytest
import torch

import models
from engine.sweep.spaces import expand, load_space

SEED = Path(__file__).resolve().parents[2] / "search_spaces" / "seed"
FILES = sorted(SEED.glob("*/*.yaml"))


def test_every_family_has_every_axis_in_both_sizes():
    names = {f"{p.parent.name}/{p.stem}" for p in FILES}
    assert names == {f"{kind}/{family}-{axis}" for kind in ("cpu", "gpu")
                     for family in ("eqv2", "transformer", "periodic") for axis in ("params", "data", "compute")}


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_space_file_loads_and_names_its_axis(path):
    space = load_space(path)
    assert path.stem.endswith(space.axis) and expand(space)


def test_cpu_eqv2_params_ladder_spans_one_and_a_half_decades():
    space = load_space(SEED / "cpu" / "eqv2-params.yaml")
    counts = []
    for preset in space.sizes:
        with torch.device("meta"):
            counts.append(models.build(space.model, preset=preset).num_parameters())
    assert math.log10(max(counts) / min(counts)) >= 1.5


def test_cpu_eqv2_compute_is_the_reference_grid():
    space = load_space(SEED / "cpu" / "eqv2-compute.yaml")
    assert not space.early_stop and len(space.sizes) >= 4
