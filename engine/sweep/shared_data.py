"""What every trial of a sweep shares, prepared once in the driver before any trial starts.

- The dataset's normalization (:mod:`engine.data.normalize`), fitted once on the fixed reference
  subset and saved as ``sweeps/<name>/normalization.json``; every trial's ``data.normalization_file``
  points at it, so every training-set size trains and is scored in one unit system. A trial that
  cannot see the file (another node without shared storage) fits the same subset itself, to the same
  numbers.
- The naive baselines (:mod:`engine.loop.baselines`) on the sweep's own validation set, with the
  nearest neighbour searched in the sweep's largest training subset (its first
  :data:`MAX_NEIGHBOUR_POOL` structures), saved as ``baselines.json`` and logged on the parent run
  as ``baseline_<name>_<metric>``.
- The budget rule (``budget_rule`` on the parent run): ``epochs=N``, ``steps=N`` or
  ``early_stop(...)``.
- The dataset as an MLflow input (:mod:`engine.sweep.datasets`): source, a digest of the structures
  the trials train and are scored on, and the split sizes, from the splits loaded here.

- With ``data.lazy``, the dataset's index (atoms per record, split groups: one pass over every row,
  :meth:`engine.data.lazy.LazyAseDB.index`), built here once and written next to the data under a
  lock, so trials and DDP ranks on any node that reads the data read it instead of building their own.

A resumed sweep reuses the saved files, so its trials keep the units they started in.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from engine.config import TrialConfig
from engine.sweep.datasets import DatasetInfo, describe

NORMALIZATION_FILE = "normalization.json"
BASELINES_FILE = "baselines.json"
MAX_NEIGHBOUR_POOL = 20000  # structures searched by the 1-NN baseline (fingerprints cost ~1 ms each)


@dataclass
class SharedData:
    """The sweep-wide pieces (see the module docstring); ``normalization_file`` None when not prepared."""

    budget_rule: str
    normalization_file: str | None = None
    baselines: dict[str, float] = field(default_factory=dict)
    dataset: DatasetInfo | None = None  # None when the driver cannot read the data (cluster-only path)


def budget_rule(config: TrialConfig) -> str:
    """One line saying how long each trial trains, e.g. ``steps=600`` or ``epochs=6``."""
    rule = config.budget.rule
    if rule == "epochs":
        return f"epochs={config.epochs}"
    if config.budget.early_stop is not None:
        return f"{rule}, at most {config.epochs} epochs"
    return rule


def _split_uids(part) -> Iterator[str]:
    """The uids of a split, one at a time; a lazy one (data.lazy) names them without reading its rows."""
    db, indices = getattr(part, "db", None), getattr(part, "indices", None)
    if db is not None and indices is not None:
        return (db.uid(int(i)) for i in indices)
    return (r.uid for r in part)


def prepare_shared_data(configs: list[TrialConfig], sweep_dir: Path, stream: TextIO | None = None) -> SharedData:
    """Fit (or reload) the normalization and the baselines of the sweep whose trials have ``configs``."""
    from engine.data.dataset import load_splits
    from engine.data.normalize import Normalization
    from engine.loop.baselines import baseline_metrics

    first = configs[0]
    shared = SharedData(budget_rule=budget_rule(first))
    data = first.data
    if data.path is not None and not Path(data.path).expanduser().exists():
        # a dataset only the cluster's nodes see: each trial fits the same reference subset itself
        print(f"shared data: {data.path} is not readable here; trials fit the normalization themselves, "
              "no baselines", file=stream, flush=True)
        return shared
    sizes = [c.data.train_size for c in configs]
    largest = None if any(not n for n in sizes) else max(int(n) for n in sizes if n)
    splits = load_splits(dataclasses.replace(data, train_size=largest, normalization_file=None), progress=False)
    index_sizes = getattr(splits.train, "sizes", None)  # a lazy split (data.lazy): build the dataset's index now
    if index_sizes is not None:
        index_sizes()
    # the largest training subset holds every smaller one (nested), so these uids are all a trial sees
    uids = (u for part in (splits.train, splits.val, splits.test) for u in _split_uids(part))  # streamed
    shared.dataset = describe(dataclasses.asdict(data), uids, splits.pool_size, len(splits.val), len(splits.test))
    norm_path = sweep_dir / NORMALIZATION_FILE
    if norm_path.exists():
        norm = Normalization.load(norm_path)
    else:
        norm = splits.normalization
        assert norm is not None
        norm.save(norm_path)
    shared.normalization_file = str(norm_path.resolve())
    base_path = sweep_dir / BASELINES_FILE
    if base_path.exists():
        shared.baselines = {k: float(v) for k, v in json.loads(base_path.read_text()).items()}
    else:
        shared.baselines = baseline_metrics(splits.val, splits.train[:MAX_NEIGHBOUR_POOL], norm, first.loss)
        base_path.write_text(json.dumps(shared.baselines, indent=1, sort_keys=True) + "\n")
    return shared
