"""What a tuning sweep (``engine.tune``) found: its trials, the best value per size, and edge warnings.

A search is not a scaling law: the report tabulates every trial (learning rate × batch size → final
validation loss), plots loss against learning rate per size, names the best trial of each size and
warns when the best learning rate (or batch size) sits at the edge of the searched range, where the
optimum may lie outside it. No law and no compute frontier is fitted.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import yaml

from engine import metrics as M

EDGE_FRACTION = 0.1  # the best LR is "at the edge" within this fraction of the log-range from a bound


def _param_list(text: str | None) -> list:
    if text is None:
        return []
    try:
        value = yaml.safe_load(str(text))
    except yaml.YAMLError:
        return []
    return value if isinstance(value, list) else []


def search_range(parent_params: dict) -> dict:
    """The searched LR range and batch sizes, from the parent run's ``space.search.*`` params."""
    def num(key: str) -> float:
        try:
            return float(parent_params.get(key, "nan"))
        except ValueError:
            return math.nan

    return {"lr_min": num("space.search.lr_min"), "lr_max": num("space.search.lr_max"),
            "batch_sizes": sorted(int(b) for b in _param_list(parent_params.get("space.search.batch_sizes")))}


def edge_warnings(best: dict, rng: dict) -> list[str]:
    """Sentences warning that the best value lies at the edge of the searched range (empty when inside)."""
    out = []
    lo, hi, lr = rng["lr_min"], rng["lr_max"], best["peak_lr"]
    if all(math.isfinite(v) and v > 0 for v in (lo, hi, lr)) and hi > lo:
        pos = (math.log(lr) - math.log(lo)) / (math.log(hi) - math.log(lo))
        if pos >= 1 - EDGE_FRACTION:
            out.append(f"the best learning rate {lr:.3g} lies at the upper edge of the searched range "
                       f"[{lo:.3g}, {hi:.3g}]: the optimum may be higher; widen lr_max and tune again")
        elif pos <= EDGE_FRACTION:
            out.append(f"the best learning rate {lr:.3g} lies at the lower edge of the searched range "
                       f"[{lo:.3g}, {hi:.3g}]: the optimum may be lower; widen lr_min and tune again")
    sizes = rng["batch_sizes"]
    bs = best["batch_size"]
    if len(sizes) > 1 and math.isfinite(bs) and bs in (sizes[0], sizes[-1]):
        side = "smallest" if bs == sizes[0] else "largest"
        out.append(f"the best batch size {int(bs)} is the {side} of those searched {sizes}")
    return out


def hpo_summary(frame: pd.DataFrame, parent_params: dict) -> dict:
    """Trials (lr, batch size → final val loss), the best per size among trials trained to the end, warnings."""
    rng = search_range(parent_params)
    trials = []
    for run_id, g in frame.groupby("run_id", sort=False):
        vals = g.dropna(subset=[M.VAL_LOSS]) if M.VAL_LOSS in g else g.iloc[0:0]
        last = vals.sort_values(M.EPOCH).iloc[-1] if len(vals) else g.iloc[-1]
        status = g["engine_status"].iloc[0]
        status = status if isinstance(status, str) else str(g["status"].iloc[0]).lower()
        trials.append({"trial_id": str(g["trial_id"].iloc[0]), "run_id": str(run_id), "preset": g["preset"].iloc[0],
                       M.N_PARAMS: float(g[M.N_PARAMS].iloc[0]), "peak_lr": float(g["peak_lr"].iloc[0]),
                       "batch_size": float(g["batch_size"].iloc[0]), M.EPOCH: float(last[M.EPOCH]),
                       M.VAL_LOSS: float(last[M.VAL_LOSS]) if len(vals) else math.nan, "status": status})
    trials.sort(key=lambda t: (t[M.N_PARAMS], t["peak_lr"]))
    best: dict[str, dict] = {}
    for preset in sorted({str(t["preset"]) for t in trials}, key=lambda p: min(
            t[M.N_PARAMS] for t in trials if str(t["preset"]) == p)):
        mine = [t for t in trials if str(t["preset"]) == preset and np.isfinite(t[M.VAL_LOSS])
                and t["status"] != M.STATUS_DIVERGED]
        done = [t for t in mine if t["status"] == "completed"] or mine
        if not done:
            best[preset] = {"not_available": "no trial of this size reported a finite val_loss"}
            continue
        b = dict(min(done, key=lambda t: t[M.VAL_LOSS]))
        b["warnings"] = edge_warnings(b, rng)
        best[preset] = b
    return {"range": rng, "trials": trials, "best": best}
