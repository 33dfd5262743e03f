"""From a :class:`engine.config.DataConfig` to validated train/val/test record lists.

``path=None`` gives the embedded EMT dataset (:mod:`engine.data.emt`); otherwise the file or
folder is read with :func:`engine.data.readers.read_records`. Every record is validated (NaN,
zero-volume cell, label shapes) with the source named in the error, then split by group hash
(:mod:`engine.data.splits`). The dataset's normalization (:mod:`engine.data.normalize`) is fitted
here on a fixed reference subset of the pool, the same whatever ``train_size`` is, or read from
``cfg.normalization_file`` when that file exists (a sweep writes one for all its trials).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.config import DataConfig
from engine.data.normalize import Normalization, fit_normalization
from engine.data.records import Record
from engine.data.splits import split_indices
from engine.errors import DataError


@dataclass
class Splits:
    """Train (nested ``train_size`` prefix of the pool), val (capped at ``max_val``) and test (``max_test``) records.

    ``pool_size`` is how many structures the training pool holds (the largest possible
    ``train_size``); ``source`` names where the data came from; ``skipped`` lists the
    (uid, reason) of records dropped by ``skip_bad_records``; ``normalization`` is the dataset's
    (shared by every training-set size).
    """

    train: list[Record]
    val: list[Record]
    test: list[Record]
    pool_size: int
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    normalization: Normalization | None = None


def load_records(cfg: DataConfig, progress: bool = True) -> tuple[list[Record], str, list[tuple[str, str]]]:
    """All records of ``cfg``'s source, validated: (records, source name, skipped)."""
    skipped: list[tuple[str, str]] = []
    if cfg.path is None:
        from engine.data.emt import cache_file, load_emt_dataset
        from engine.paths import cache_dir

        folder = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir()
        records = load_emt_dataset(cfg.emt_size, cfg.emt_seed, folder, progress=progress, subsets=cfg.emt_subsets)
        source = f"EMT dataset {cache_file(folder, cfg.emt_seed, cfg.emt_size, cfg.emt_subsets)}"
    else:
        from engine.data.readers import read_records

        result = read_records(cfg.path, skip_bad=cfg.skip_bad_records, group_key=cfg.group_key, fmt=cfg.format)
        records, skipped = result.records, result.skipped
        source = str(Path(cfg.path).expanduser().resolve())
    kept = []
    for r in records:
        try:
            r.validate(where=source)
            if np.any(r.pbc) and not np.all(r.pbc):
                raise DataError(
                    f"record {r.uid!r} in {source} is periodic along {r.pbc.tolist()} only; neighbor lists need "
                    "full 3D periodicity or none: add vacuum and set pbc=True, or pass --skip-bad-records"
                )
            kept.append(r)
        except DataError as exc:
            if not cfg.skip_bad_records:
                raise
            skipped.append((r.uid, str(exc)))
    if not kept:
        raise DataError(f"no usable structures in {source}; check the file (or drop --skip-bad-records to see why)")
    return kept, source, skipped


def reference_subset(records: list[Record], pool: list[int], size: int | None) -> list[Record]:
    """The structures the dataset's normalization is fitted on: the first ``size`` of the pool's
    seed-0 order (the whole pool when ``size`` is None/0). Every nested training subset of at most
    ``size`` structures lies inside it."""
    chosen = pool if not size else pool[:size]
    return [records[k] for k in chosen]


def dataset_normalization(cfg: DataConfig, records: list[Record], pool: list[int]) -> Normalization:
    """``cfg.normalization_file`` when it exists, else a fit on :func:`reference_subset`."""
    if cfg.normalization_file and Path(cfg.normalization_file).is_file():
        return Normalization.load(cfg.normalization_file)
    return fit_normalization(reference_subset(records, pool, cfg.normalization_size))


def load_splits(cfg: DataConfig, progress: bool = True) -> Splits:
    """Load, validate and split the data of ``cfg``, with the dataset's normalization (module docstring)."""
    if cfg.normalization_size is not None and cfg.normalization_size < 0:
        raise DataError(f"data.normalization_size must be ≥ 0, got {cfg.normalization_size}; fix it (0 = whole pool)")
    if cfg.lazy:
        return _lazy_splits(cfg)
    records, source, skipped = load_records(cfg, progress=progress)
    idx = split_indices(
        records,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        train_size=cfg.train_size,
        max_val=cfg.max_val,
        max_test=cfg.max_test,
    )
    return Splits(
        train=[records[k] for k in idx.train],
        val=[records[k] for k in idx.val],
        test=[records[k] for k in idx.test],
        pool_size=idx.pool_size,
        source=source,
        skipped=skipped,
        normalization=dataset_normalization(cfg, records, idx.pool),
    )


def _lazy_splits(cfg: DataConfig) -> Splits:
    """``cfg.lazy``: train/val/test as :class:`~engine.data.lazy.LazySubset` views of the .aselmdb rows (nothing
    loaded), split by the same rule and fitted on the same reference subset as the in-memory path, which reads
    only that subset."""
    from engine.data.lazy import LazyAseDB, LazySubset, lazy_splits
    from engine.paths import cache_dir

    if cfg.skip_bad_records:
        raise DataError("data.skip_bad_records needs every record read up front; drop it with data.lazy (--lazy)")
    db = LazyAseDB(str(cfg.path), group_key=cfg.group_key)
    folder = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir()
    idx = lazy_splits(db, cfg.val_fraction, cfg.test_fraction, cfg.train_size, max_val=cfg.max_val, cache_dir=folder,
                      max_test=cfg.max_test)
    return Splits(
        train=LazySubset(db, idx.train, folder),  # type: ignore[arg-type]
        val=LazySubset(db, idx.val, folder),  # type: ignore[arg-type]
        test=LazySubset(db, idx.test, folder),  # type: ignore[arg-type]
        pool_size=idx.pool_size,
        source=f"{Path(cfg.path).expanduser().resolve()} (lazy, {len(db.files)} .aselmdb file(s))",
        normalization=dataset_normalization(cfg, db, idx.pool),  # type: ignore[arg-type]
    )
