"""The data one trial reads: its splits as graph datasets, capped, and the dataset's normalization.

In memory, every graph is built at the start (neighbor lists cached on disk by structures and
:class:`~engine.data.graph.GraphSpec`); with ``data.lazy`` the splits are views of ``.aselmdb`` rows and a
graph is built when its batch is read (in DataLoader workers). The validation set is capped at ``data.max_val``
and the test split at ``data.max_test`` (the test set is built only at the trial's end).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import paths
from engine.config import TrialConfig
from engine.data.graph import GraphDataset, GraphSpec
from engine.data.lazy import LazyGraphDataset, LazySubset
from engine.data.store import cached_graph_dataset
from engine.errors import DataError
from models.base import Normalization


def read_splits(config: TrialConfig, splits: Any, progress: bool) -> Any:
    """``splits`` (a hand-made object with ``train``/``val``/``test``), else the config's data, loaded; the
    training split must not be empty."""
    if splits is None:
        from engine.data.dataset import load_splits

        splits = load_splits(config.data, progress=progress)
    if not splits.train:
        raise DataError("the training subset is empty; use a larger dataset or --train-size > 0")
    return splits


def trial_normalization(config: TrialConfig, splits: Any) -> Normalization:
    """The dataset's normalization carried by ``splits``; for a hand-made splits object without one, the
    saved ``data.normalization_file``, else a fit on its training records."""
    norm = getattr(splits, "normalization", None)
    if norm is not None:
        return norm
    if config.data.normalization_file and Path(config.data.normalization_file).is_file():
        return Normalization.load(config.data.normalization_file)
    from engine.data.normalize import fit_normalization

    return fit_normalization(list(splits.train))


class TrialData:
    """The train, validation and test sets of one trial, as graphs for the model's cutoff and neighbor cap."""

    def __init__(self, config: TrialConfig, splits: Any, model_config: Any) -> None:
        """``model_config``: the model's (its ``cutoff``, ``max_neighbors``, ``strict_neighbors``)."""
        mc = model_config
        spec = GraphSpec(cutoff=float(mc.cutoff), max_neighbors=int(mc.max_neighbors), strict=bool(mc.strict_neighbors))
        self.lazy = isinstance(splits.train, LazySubset)  # data.lazy: .aselmdb rows read on demand
        self.spec = spec
        self.cache = config.data.cache_dir or str(paths.cache_dir())
        val = splits.val if self.lazy else list(splits.val)
        if config.data.max_val is not None and config.data.max_val > 0:
            val = val[: config.data.max_val]
        self.train_set = self.graph_set(splits.train)
        self.train_sizes = self.train_set.sizes()  # atoms per training structure (numpy), packed every epoch
        self.val_set = self.graph_set(val)
        test = getattr(splits, "test", None)
        self.test_records = test if self.lazy else list(test or [])
        if config.data.max_test is not None and self.test_records is not None:  # load_splits caps it; hand-made too
            self.test_records = self.test_records[: config.data.max_test]
        # epoch 0 has no running train average: score the untrained model on a train prefix instead
        n_probe = max(1, min(len(self.train_set), len(val) or 256))
        probe = self.train_set.records[:n_probe]
        self.train_probe = LazyGraphDataset(probe, spec, self.cache) if self.lazy else GraphDataset(probe, spec)

    @property
    def train_size(self) -> int:
        return len(self.train_set)

    def graph_set(self, records: Any) -> GraphDataset | LazyGraphDataset:
        """Lazy: graphs built when a batch is read (in DataLoader workers); else all now, from the disk cache."""
        if self.lazy:
            return LazyGraphDataset(records, self.spec, self.cache)
        return cached_graph_dataset(list(records), self.spec, self.cache)

    def test_set(self) -> GraphDataset | LazyGraphDataset | None:
        """The (capped) test split as graphs, built now; None without one."""
        if self.test_records is None or not len(self.test_records):
            return None
        return self.graph_set(self.test_records)
