"""Atomic cache writes: an interrupted write leaves neither a cache nor a temp file."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data.readers import read_records
from engine.data.store import write_aselmdb


def test_aselmdb_round_trip_keeps_labels(emt_cache, tmp_path):
    _, records = emt_cache
    path = tmp_path / "copy.aselmdb"
    write_aselmdb(records[:5], path, metadata={"note": "test"})
    back = read_records(path).records
    assert [r.uid for r in back] == [f"copy.aselmdb:{k}" for k in range(1, 6)]
    for a, b in zip(records[:5], back, strict=True):
        assert a.energy == pytest.approx(b.energy, abs=1e-12)
        np.testing.assert_allclose(a.forces, b.forces)
        np.testing.assert_allclose(a.stress, b.stress)
        np.testing.assert_allclose(a.cell, b.cell)


def test_interrupted_write_leaves_nothing(emt_cache, tmp_path):
    _, records = emt_cache

    def records_then_crash():
        yield from records[:3]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_aselmdb(records_then_crash(), tmp_path / "half.aselmdb")
    assert list(tmp_path.iterdir()) == []
    # an existing cache survives a failed rewrite untouched
    good = tmp_path / "good.aselmdb"
    write_aselmdb(records[:2], good)
    before = good.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        write_aselmdb(records_then_crash(), good)
    assert good.read_bytes() == before
