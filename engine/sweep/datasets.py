"""A trial's training data as an MLflow dataset input (the UI's "Datasets" column and filter).

Each trial run gets one input: the dataset's source (a file or folder, or the embedded EMT generator
with its seed and size), a digest of the structures the sweep's trials train and are scored on (the
uids of the largest training subset, which holds every smaller one, and of the validation and test
splits: two runs with the same digest saw the same structures), and tags naming the training subset
and the split sizes. The sweep driver computes it once (:mod:`engine.sweep.shared_data`) and the
tracker logs it on every trial run it creates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DIGEST_CHARS = 16


@dataclass(frozen=True)
class DatasetInfo:
    """What a sweep's trials train on: a source, a content digest and the split sizes (structures)."""

    name: str
    source: str  # absolute path, or "emt://seed<seed>/n<size>[/subsets]" for the embedded generator
    digest: str
    n_train_pool: int
    n_val: int
    n_test: int


def digest_of(uids: Iterable[str]) -> str:
    """A short, order-independent digest of the structures' identities, in one streaming pass (no list, no sort:
    OMat24 has ~10⁸ uids): their count and the sum mod 2¹²⁸ of each uid's BLAKE2b-128, a multiset hash
    (MSet-Add-Hash, Clarke et al. 2003, ASIACRYPT, "Incremental multiset hash functions")."""
    total = count = 0
    for uid in uids:
        total += int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=16).digest(), "little")
        count += 1
    return hashlib.sha256(f"{count}:{total % (1 << 128)}".encode()).hexdigest()[:DIGEST_CHARS]


def describe(data: dict, pool_uids: Iterable[str], n_train_pool: int, n_val: int, n_test: int) -> DatasetInfo:
    """``data`` is a trial config's ``data`` section (a dict); ``pool_uids`` the structures' uids (any order, read
    once)."""
    path = data.get("path")
    if path:
        source = str(Path(path).resolve())
        name = Path(path).name
    else:
        subsets = data.get("emt_subsets") or []
        tail = "/" + ",".join(subsets) if subsets else ""
        source = f"emt://seed{data.get('emt_seed', 0)}/n{data.get('emt_size')}{tail}"
        name = f"emt-seed{data.get('emt_seed', 0)}-n{data.get('emt_size')}"
    return DatasetInfo(name, source, digest_of(pool_uids), n_train_pool, n_val, n_test)


def log_dataset(client, run_id: str, info: DatasetInfo, train_size: int | None) -> None:
    """Attach ``info`` to ``run_id`` as a training input, with the subset and split sizes as tags."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    dataset = MetaDataset(source=LocalArtifactDatasetSource(info.source), name=info.name, digest=info.digest)
    tags = [
        InputTag("mlflow.data.context", "train"),
        InputTag("engine.train_size", str(train_size if train_size else info.n_train_pool)),
        InputTag("engine.train_pool", str(info.n_train_pool)),
        InputTag("engine.n_val", str(info.n_val)),
        InputTag("engine.n_test", str(info.n_test)),
    ]
    client.log_inputs(run_id, datasets=[DatasetInput(dataset=dataset._to_mlflow_entity(), tags=tags)])
