"""A sweep's runs as one JSON file, so a report can be rebuilt after its MLflow store is gone.

``build_report`` writes ``runs/<sweep>.json`` beside every report: the same tidy frame
:func:`engine.report.collect.collect_sweep` reads from MLflow (one row per trial and report), the
parent run's baselines and params, and where the runs came from. ``python -m engine.report --runs FILE``
reads it back as a :class:`SweepData`, and the report built from it is the report built from MLflow
(same fits, same figures). A committed gallery carries its runs this way; a SQLite store beside it would
be a binary blob in git, and a store on a cluster's PostgreSQL is gone with the cluster.

Floats are written with Python's shortest round-trip repr, so every value reads back bit for bit; NaN
(a metric a row did not log) is written as null.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from engine.errors import UserError
from engine.report.collect import SweepData

FORMAT = "engine-runs/1"


class SnapshotError(UserError):
    """A runs file that cannot be read (missing, not JSON, another format)."""


def _cell(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _cell(value.item())
    return value


def to_dict(data: SweepData) -> dict:
    """The JSON-ready form of ``data`` (see the module docstring)."""
    frame = data.frame
    return {
        "format": FORMAT,
        "sweep": data.name,
        "axis": data.axis,
        "source": {"tracking_uri": data.tracking_uri, "experiment_id": data.experiment_id,
                   "parent_run_id": data.parent_run_id},
        "baselines": data.baselines,
        "parent_params": data.parent_params,
        "columns": list(frame.columns),
        "dtypes": [str(t) for t in frame.dtypes],
        "rows": [[_cell(v) for v in row] for row in frame.itertuples(index=False, name=None)],
    }


def save(data: SweepData, path: Path) -> Path:
    """Write ``data`` to ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_dict(data), ensure_ascii=False, allow_nan=False, separators=(",", ":")))
    tmp.replace(path)
    return path


def load(path: Path) -> SweepData:
    """A :class:`SweepData` from a runs file; one-line :class:`SnapshotError` when it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SnapshotError(f"no runs file {path}; a report folder keeps them under runs/<sweep>.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"cannot read runs file {path} ({exc}); give a runs/<sweep>.json a report wrote") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise SnapshotError(f"{path} is not a runs file (format {got!r}, expected {FORMAT!r}); "
                            "give a runs/<sweep>.json a report wrote")
    columns = doc["columns"]
    frame = pd.DataFrame(doc["rows"], columns=columns, dtype=object)
    for col, dtype in zip(columns, doc["dtypes"], strict=True):
        if dtype.startswith(("float", "int", "uint", "bool")):  # numbers: null was NaN
            frame[col] = pd.to_numeric(frame[col].where(frame[col].notna(), math.nan)).astype(dtype)
        else:  # text ("str" in pandas 3) or mixed ("object"): missing stays missing
            frame[col] = frame[col].where(frame[col].notna(), None).astype(dtype)
    # a runs file written by hand (reports/README.md) may leave out what a report's own file always has
    if "run_id" not in frame:
        raise SnapshotError(f"{path} has no run_id column; every row names its trial (reports/README.md)")
    if "trial_id" not in frame:
        frame["trial_id"] = frame["run_id"]
    if "report_index" not in frame:  # rows in file order within each trial
        frame["report_index"] = frame.groupby("run_id", sort=False).cumcount().astype("int64")
    source = doc.get("source", {})
    return SweepData(
        name=doc["sweep"],
        tracking_uri=source.get("tracking_uri"),
        experiment_id=source.get("experiment_id"),
        parent_run_id=source.get("parent_run_id"),
        axis=doc.get("axis"),
        frame=frame,
        baselines={k: float(v) for k, v in doc.get("baselines", {}).items()},
        parent_params=dict(doc.get("parent_params", {})),
        snapshot=str(path),
    )
