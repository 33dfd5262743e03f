"""The compute frontier and compute-optimal allocation (Hoffmann et al. 2022, arXiv 2203.15556).

Compute C is the FLOPs the engine counted for every training step (``flops_cum``), not 6·N·D: a
graph model's cost per structure depends on its neighbors. Each trial contributes its learning
curve (loss at each report against cumulative FLOPs); samples seen are ``epochs_run · train_size``
(fractional passes, so a rung reached mid-epoch is credited with what it saw).

Seeds first, then the envelope. A lower envelope over single runs is an extreme-value statistic: with a
seed spread (7–12 % in L) larger than the gap between neighbouring sizes (≈ 5 %), it follows whichever
seed was luckiest, lies below every size's expected curve, sinks further the more seeds are run, and a
bootstrap over runs cannot be consistent for it (a resample only loses runs, so its envelope lies on or
above the full one). So (reference-facts, "Early stopping on the compute axis"):

1. Sizes: curves with the same (n_params, train_size), or the same ``Curve.size_key``, are seeds of one
   size. They are aligned by report key (the FLOP rung when the runs reported rungs, else the epoch) and
   averaged at every key all of them reached: mean log C and mean log L, the seed-mean curve (a seed
   stopped early ends its size's curve there: a mean over the survivors would be biased).
2. Frontier (:func:`seed_mean_envelope`): the lower envelope over sizes of the seed-mean curves, points
   that no other point with ≤ FLOPs beats, each with its size; L(C) = α·C^−β fitted on it.

- Approach 1 (§3.1): at log-spaced budgets, the size on the envelope; N_opt ∝ C^x, samples seen ∝ C^y.
  Where that size is the smallest or largest of the ladder, the optimum may lie outside the swept range:
  ``bounded_by_ladder`` lists those budgets.
- Approach 2 (§3.2): IsoFLOP profiles: at fixed budgets, each curve interpolated in log-log, log L averaged
  over the seeds of each size, a parabola in log N through the sizes, its minimum; N_opt ∝ C^x.
- Approach 3 (§3.3): from the joint law L = E + A/N^a + B/D^b, x = b/(a+b), y = a/(a+b).

Intervals: sizes are the design, not a sample, so the bootstrap resamples seeds within sizes (each size's
seeds drawn with replacement; seed means, envelope, L(C) and approaches 1–2 recomputed); the envelope of
seed means is then a smooth function of the means except where two sizes tie. The seeds' deviations from
their mean are first scaled by √(n/(n−1)), so that a resampled mean has the variance of the mean, s²/n,
rather than (n−1)/n of it. With 2 seeds a size's spread is still a one-degree-of-freedom guess: on the
12-size grid of tests/fit/test_frontier_interval.py the interval of β is about 0.7× the estimate's spread
at 2 seeds and matches it from 3. When every size has one seed there is nothing to resample within sizes
and the bootstrap falls back to drawing whole size curves (envelope recomputed, draw counts as weights),
which keeps the inconsistency above: resamples without an estimate count as drawn, and an interval that
cannot be trusted (too few resampled units on the envelope, > 5 % of resamples without a frontier, an end
on the estimate, few distinct values) is flagged "interval not reliable"
(:func:`engine.fit.trust.unreliable_intervals`). The interval is for the ladder's envelope: a ladder of
discrete sizes traces the continuous compute-optimal frontier only up to its spacing.
Where the data cannot support an approach, the result says "not available: <why>"; an unconverged L(C)
or a parameter the runs do not identify is flagged (:mod:`engine.fit.trust`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.fit.bootstrap import percentile_ci
from engine.fit.multistart import fit_scaled_huber, refit_many
from engine.fit.result import LawFit, jsonable, params_from_theta
from engine.fit.shape import LseLaw
from engine.fit.trust import fit_flags, not_identified, unreliable_intervals

POWER = LseLaw(1, False)
FRONT_KEYS = ("flops", "loss", "size", "key", "n_params", "train_size", "samples_seen", "n_seeds")


@dataclass
class Curve:
    """One trial's learning curve: loss at each report against cumulative FLOPs.

    ``key`` aligns the seeds of one size (the FLOP rung index when the run reported rungs, else the
    epoch; without either, the report's position). ``epochs_run`` (fractional passes over the training
    set) gives samples seen; ``epoch`` stands in where it is missing. ``size_key``, when given, says which
    curves are seeds of one size instead of (n_params, train_size); ``seed`` is for reporting only.
    """

    run_id: str
    n_params: float
    train_size: float
    flops: np.ndarray  # cumulative training FLOPs after each report
    loss: np.ndarray
    epoch: np.ndarray | None = None  # epochs done at each report
    epochs_run: np.ndarray | None = None  # passes over the training set at each report (fractional)
    key: np.ndarray | None = None  # report key shared by the seeds of a size: rung index, else epoch
    seed: float | None = None
    size_key: str | None = None

    def _valid(self) -> tuple[np.ndarray, ...]:
        """(flops, loss, epoch, key, samples_seen) at reports with positive finite FLOPs and loss, by FLOPs."""
        n = len(self.flops)
        c = np.asarray(self.flops, dtype=float)
        y = np.asarray(self.loss, dtype=float)
        nan = np.full(n, np.nan)
        epoch = np.asarray(self.epoch, dtype=float) if self.epoch is not None else nan
        key = (np.asarray(self.key, dtype=float) if self.key is not None
               else epoch if self.epoch is not None else np.arange(n, dtype=float))
        passes = np.asarray(self.epochs_run, dtype=float) if self.epochs_run is not None else nan
        seen = np.where(np.isfinite(passes), passes, epoch) * float(self.train_size)
        ok = np.isfinite(c) & np.isfinite(y) & (c > 0) & (y > 0)
        order = np.argsort(c[ok], kind="stable")
        return tuple(v[ok][order] for v in (c, y, epoch, key, seen))

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flops, loss, epoch) at reports with positive finite FLOPs and loss (drops epoch 0)."""
        c, y, e, _, _ = self._valid()
        return c, y, e

    def reports(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(flops, loss, key, samples_seen) at valid reports with a finite key, sorted by FLOPs.

        samples_seen = epochs_run · train_size (epoch · train_size where epochs_run is missing; NaN
        without either).
        """
        c, y, _, k, s = self._valid()
        ok = np.isfinite(k)
        return c[ok], y[ok], k[ok], s[ok]

    def size(self) -> str | tuple[float, float]:
        """What groups seeds: ``size_key`` when given, else (n_params, train_size)."""
        return self.size_key if self.size_key is not None else (float(self.n_params), float(self.train_size))


@dataclass
class SizeSeeds:
    """The seed curves of one size, aligned on the report keys that every seed reached."""

    label: str
    n_params: float
    train_size: float
    runs: list[int]  # indices into the curves
    keys: np.ndarray  # (K,) keys every seed reached
    log_flops: np.ndarray  # (seeds, K)
    log_loss: np.ndarray  # (seeds, K)
    samples_seen: np.ndarray  # (seeds, K)
    n_keys_dropped: int  # keys some seeds reached but not all (past an early-stopped seed)

    @property
    def n_seeds(self) -> int:
        return len(self.runs)


def seed_groups(curves: list[Curve]) -> list[SizeSeeds]:
    """Group curves by size and align each size's seeds by report key, sorted by (n_params, train_size).

    A key a curve reported twice keeps its last report. n_params and train_size of a ``size_key`` group
    are its first curve's.
    """
    members: dict = {}
    for i, cv in enumerate(curves):
        members.setdefault(cv.size(), []).append(i)
    groups = []
    for size, runs in members.items():
        per = []
        for i in runs:
            c, y, k, s = curves[i].reports()
            uk, last = np.unique(k[::-1], return_index=True)  # reversed: the last report of a key wins
            pos = len(k) - 1 - last
            per.append((uk, np.log(c[pos]), np.log(y[pos]), s[pos]))
        common, every = per[0][0], per[0][0]
        for uk, *_ in per[1:]:
            common, every = np.intersect1d(common, uk), np.union1d(every, uk)
        rows = [np.searchsorted(uk, common) for uk, *_ in per]
        stack = [np.array([p[j][r] for p, r in zip(per, rows)]).reshape(len(runs), len(common)) for j in (1, 2, 3)]
        first = curves[runs[0]]
        label = size if isinstance(size, str) else f"N={first.n_params:.4g}, D={first.train_size:.4g}"
        groups.append(SizeSeeds(label, float(first.n_params), float(first.train_size), runs, common, *stack,
                                n_keys_dropped=len(every) - len(common)))
    groups.sort(key=lambda g: (g.n_params, g.train_size, g.label))
    return groups


def _lower_envelope(log_c: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """Indices (sorted by FLOPs) of the points that no point with ≤ FLOPs beats."""
    if len(log_c) == 0:
        return np.zeros(0, dtype=int)
    order = np.lexsort((log_y, log_c))
    y = log_y[order]
    best = np.minimum.accumulate(y)
    return order[np.r_[True, y[1:] < best[:-1]]]


def _inflate(v: np.ndarray) -> np.ndarray:
    """Seed values (seeds, K) with their deviations from the seed mean scaled by √(n/(n−1)).

    The bootstrap mean of n values drawn from n has variance (n−1)/n · s²/n; drawn from the inflated
    values it has s²/n, the variance of the mean (with 2 seeds the plain interval is 30 % too narrow).
    """
    n = v.shape[0]
    m = v.mean(axis=0)
    return m + np.sqrt(n / (n - 1)) * (v - m) if n > 1 else v


class _Ladder:
    """The sizes' aligned seed curves flattened into one point list, for the envelope and its bootstrap."""

    def __init__(self, curves: list[Curve]):
        self.curves = curves
        self.groups = seed_groups(curves)
        g = self.groups
        self.point_size = np.concatenate([np.full(len(s.keys), i) for i, s in enumerate(g)] or [np.zeros(0, int)])
        self.point_size = self.point_size.astype(int)
        self.keys = np.concatenate([s.keys for s in g] or [np.zeros(0)])
        self.n_params = np.array([s.n_params for s in g], dtype=float)
        self.train_size = np.array([s.train_size for s in g], dtype=float)
        self.n_seeds = np.array([s.n_seeds for s in g], dtype=int)
        self.has_points = np.array([len(s.keys) > 0 for s in g], dtype=bool)

    def means(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Seed-mean log C, log L and samples seen of every point."""
        cat = [np.concatenate([getattr(s, a).mean(axis=0) for s in self.groups] or [np.zeros(0)])
               for a in ("log_flops", "log_loss", "samples_seen")]
        return cat[0], cat[1], cat[2]

    def resampled_means(self, draws: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per resample (B, points): seed means with each size's (inflated) seeds drawn as ``draws[size]``."""
        out = []
        for a in ("log_flops", "log_loss", "samples_seen"):
            parts = [_inflate(getattr(s, a))[d].mean(axis=1) for s, d in zip(self.groups, draws)]  # (B, K) each
            out.append(np.concatenate(parts, axis=1) if parts else np.zeros((len(draws[0]) if draws else 0, 0)))
        return out[0], out[1], out[2]

    def inflated_curves(self) -> list[Curve]:
        """The curves with each size's aligned reports inflated as in :func:`_inflate` (for approach 2's
        resamples); reports at keys not every seed reached are kept as they are."""
        out = list(self.curves)
        for s in self.groups:
            if s.n_seeds < 2 or not len(s.keys):
                continue
            lf, ly = _inflate(s.log_flops), _inflate(s.log_loss)
            for row, i in enumerate(s.runs):
                cv = self.curves[i]
                c, y, _, k, _ = cv._valid()
                raw = ~np.isin(k, s.keys)
                out[i] = Curve(cv.run_id, cv.n_params, cv.train_size, np.r_[c[raw], np.exp(lf[row])],
                               np.r_[y[raw], np.exp(ly[row])], seed=cv.seed, size_key=cv.size_key)
        return out

    def front(self, log_c: np.ndarray, log_y: np.ndarray, seen: np.ndarray,
              present: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The envelope of the given seed-mean points (over the sizes in ``present``, all by default)."""
        idx = np.arange(len(log_c))
        if present is not None:
            idx = idx[present[self.point_size]]
        idx = idx[_lower_envelope(log_c[idx], log_y[idx])]
        s = self.point_size[idx]
        return {"flops": np.exp(log_c[idx]), "loss": np.exp(log_y[idx]), "size": s, "key": self.keys[idx],
                "n_params": self.n_params[s], "train_size": self.train_size[s], "samples_seen": seen[idx],
                "n_seeds": self.n_seeds[s]}

    def ladder_n_params(self) -> np.ndarray:
        """Model sizes that have a seed-mean curve (the ladder the envelope chooses from)."""
        return np.unique(self.n_params[self.has_points])

    def seeds_text(self) -> str:
        """How many seeds each size has, in words."""
        n = self.n_seeds[self.has_points]
        if len(n) == 0:
            return "no size has a point"
        if n.min() == n.max():
            txt = f"{n[0]} seed{'s' if n[0] > 1 else ''} for each of {len(n)} sizes"
        else:
            txt = f"{n.min()}–{n.max()} seeds per size over {len(n)} sizes ({', '.join(str(v) for v in n)})"
        empty = int((~self.has_points).sum())
        if empty:
            txt += f"; {empty} size{'s' if empty > 1 else ''} whose seeds share no report key left out"
        return txt

    def table(self) -> list[dict]:
        """One row per size: identity, seeds, runs, keys kept and dropped."""
        return [{"label": s.label, "n_params": s.n_params, "train_size": s.train_size, "n_seeds": s.n_seeds,
                 "run_ids": [self.curves[i].run_id for i in s.runs],
                 "seeds": [self.curves[i].seed for i in s.runs],
                 "n_keys": len(s.keys), "n_keys_dropped": s.n_keys_dropped} for s in self.groups]


def seed_mean_envelope(curves: list[Curve]) -> dict[str, np.ndarray]:
    """The compute frontier: lower envelope over sizes of the seed-mean curves.

    Curves are grouped by size (``Curve.size_key``, else (n_params, train_size)); a size's seeds are
    aligned by report key and, at each key every seed reached, averaged as mean log FLOPs and mean log L
    (and mean samples seen). The envelope keeps the points that no point with ≤ FLOPs beats.

    Returns arrays sorted by FLOPs: flops, loss (geometric seed means), size (index into
    :func:`seed_groups` order), key, n_params, train_size, samples_seen (epochs_run · train_size,
    NaN without it), n_seeds. Vectorized over points: one Python step per curve, none per point.
    """
    lad = _Ladder(curves)
    return lad.front(*lad.means())


def pareto_frontier(curves: list[Curve]) -> dict[str, np.ndarray]:
    """Lower envelope over single runs (seeds not averaged): the biased extreme-value statistic.

    Kept for comparison (e.g. to measure its bias by simulation); the frontier is
    :func:`seed_mean_envelope`. Returns flops, loss, run (index into ``curves``), n_params, train_size,
    samples_seen, sorted by FLOPs.
    """
    parts = [(c, y, np.full(len(c), i), s) for i, cv in enumerate(curves) for c, y, _, _, s in [cv._valid()]]
    if not parts:
        return {k: np.zeros(0) for k in ("flops", "loss", "run", "n_params", "train_size", "samples_seen")}
    c, y, run, seen = (np.concatenate(p) for p in zip(*parts))
    idx = _lower_envelope(np.log(c), np.log(y))
    run = run[idx].astype(int)
    n = np.array([cv.n_params for cv in curves], dtype=float)[run]
    d = np.array([cv.train_size for cv in curves], dtype=float)[run]
    return {"flops": c[idx], "loss": y[idx], "run": run, "n_params": n, "train_size": d, "samples_seen": seen[idx]}


def _envelope_at(front: dict, budgets: np.ndarray) -> np.ndarray:
    """Index into the frontier of the best point with FLOPs ≤ each budget (−1 where none)."""
    return np.searchsorted(front["flops"], budgets, side="right") - 1


def _loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y on log x."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _ladder_bounds(budgets: np.ndarray, n_opt: np.ndarray, ladder: np.ndarray) -> dict:
    """Budgets whose compute-optimal size is an end of the ladder, and a sentence saying so."""
    lo, hi = float(np.min(ladder)), float(np.max(ladder))
    ends = {"smallest": budgets[n_opt == lo], "largest": budgets[n_opt == hi]}
    out: dict = {"bounded_by_ladder": {k: [float(b) for b in v] for k, v in ends.items()},
                 "ladder_n_params": [lo, hi]}
    said = []
    for end, n, way in (("smallest", lo, "below"), ("largest", hi, "above")):
        b = ends[end]
        if len(b):
            span = f"{b[0]:.3g} FLOPs" if len(b) == 1 else f"{b[0]:.3g}–{b[-1]:.3g} FLOPs"
            said.append(f"at {len(b)} of {len(budgets)} budgets ({span}) the compute-optimal size is the {end} "
                        f"swept (N = {n:.4g}), so the optimum there may lie {way} the ladder")
    if said:
        out["ladder_note"] = "; ".join(said)
    return out


def approach1(front: dict, n_budgets: int = 12, ladder: np.ndarray | None = None) -> dict:
    """Chinchilla approach 1 on the envelope: the size (N, samples seen) on the frontier at log-spaced budgets.

    With ``ladder`` (every swept n_params), ``bounded_by_ladder`` lists the budgets whose optimum is the
    smallest or the largest size, where the true optimum may lie outside the swept range.
    """
    if len(front["flops"]) < 3:
        return {"not_available": f"the frontier has {len(front['flops'])} points; needs ≥ 3"}
    budgets = np.geomspace(front["flops"][0], front["flops"][-1], n_budgets)
    idx = _envelope_at(front, budgets)
    n_opt, d_seen = front["n_params"][idx], front["samples_seen"][idx]
    out = {"budgets_flops": budgets, "n_opt": n_opt, "samples_seen_opt": d_seen,
           "train_size_opt": front["train_size"][idx]}
    if ladder is not None and len(ladder):
        out.update(_ladder_bounds(budgets, n_opt, np.asarray(ladder, dtype=float)))
    sizes = np.unique(n_opt)
    if len(sizes) < 2:
        out["not_available"] = (
            f"one model size (N={sizes[0]:.4g}) reaches the frontier at every budget; "
            "sweep sizes whose curves cross to estimate N_opt(C)"
        )
        return out
    out["x_n_opt"] = _loglog_slope(budgets, n_opt)
    if np.all(np.isfinite(d_seen)) and np.all(d_seen > 0):
        out["y_samples_seen"] = _loglog_slope(budgets, d_seen)
    return out


def _interp_loglog(c: np.ndarray, y: np.ndarray, budget: float) -> float:
    """log L of a curve at ``budget`` by linear interpolation in (log C, log L); NaN outside it."""
    if len(c) == 0 or budget < c[0] or budget > c[-1]:
        return float("nan")
    if len(c) == 1:
        return float(np.log(y[0]))
    return float(np.interp(np.log(budget), np.log(c), np.log(y)))


def isoflop_budgets(curves: list[Curve], n_budgets: int = 6, min_sizes: int = 3) -> np.ndarray:
    """Log-spaced budgets that at least ``min_sizes`` distinct model sizes' curves span."""
    spans = []
    for cv in curves:
        c, _, _ = cv.points()
        if len(c):
            spans.append((c[0], c[-1], cv.n_params))
    if not spans:
        return np.zeros(0)
    lo = min(s[0] for s in spans)
    hi = max(s[1] for s in spans)
    cand = np.geomspace(lo, hi, 40) if hi > lo else np.array([lo])
    ok = [b for b in cand if len({n for a, z, n in spans if a <= b <= z}) >= min_sizes]
    if not ok:
        return np.zeros(0)
    pick = np.unique(np.round(np.linspace(0, len(ok) - 1, min(n_budgets, len(ok)))).astype(int))
    return np.array(ok)[pick]


def isoflop_profiles(curves: list[Curve], budgets: np.ndarray) -> list[dict]:
    """For each budget: sizes, mean log L per size (seeds averaged), the parabola in log N, its minimum."""
    profiles = []
    sizes_all = np.array([cv.n_params for cv in curves], dtype=float)
    pts = [cv.points() for cv in curves]
    for b in budgets:
        vals = np.array([_interp_loglog(c, y, b) for c, y, _ in pts])
        ok = np.isfinite(vals)
        sizes = np.unique(sizes_all[ok])
        mean_log = np.array([vals[ok & (sizes_all == s)].mean() for s in sizes])
        prof = {"budget_flops": float(b), "n_params": sizes, "loss": np.exp(mean_log)}
        if len(sizes) < 3:
            prof["not_available"] = f"{len(sizes)} model sizes span this budget; a parabola needs ≥ 3"
            profiles.append(prof)
            continue
        u = np.log(sizes)
        c2, c1, c0 = np.polyfit(u, mean_log, 2)
        prof["parabola_log"] = [float(c2), float(c1), float(c0)]  # log L = c2·u² + c1·u + c0, u = ln N
        if c2 <= 0:
            prof["not_available"] = "the profile is not convex (no minimum); sizes do not bracket the optimum"
        else:
            u_star = -c1 / (2 * c2)
            if not (u.min() <= u_star <= u.max()):
                prof["not_available"] = (
                    f"the parabola's minimum N={np.exp(np.clip(u_star, -700, 700)):.3g} lies outside the swept sizes "
                    f"{sizes.min():.3g}–{sizes.max():.3g}"
                )
            else:
                prof["n_opt"] = float(np.exp(u_star))
                prof["loss_opt"] = float(np.exp(c0 + c1 * u_star + c2 * u_star**2))
        profiles.append(prof)
    return profiles


def approach2(curves: list[Curve], budgets: np.ndarray) -> dict:
    """Chinchilla approach 2: N_opt(C) from IsoFLOP minima, N_opt ∝ C^x."""
    if len(budgets) == 0:
        why = "no budget is spanned by ≥ 3 model sizes' curves; sweep ≥ 3 sizes with overlapping FLOPs"
        return {"not_available": why,
                "profiles": []}
    profiles = isoflop_profiles(curves, budgets)
    good = [p for p in profiles if "n_opt" in p]
    out: dict = {"profiles": profiles}
    if len(good) < 2:
        out["not_available"] = (
            f"{len(good)} of {len(profiles)} IsoFLOP budgets have an interior minimum; needs ≥ 2 "
            "(sweep sizes on both sides of the optimum)"
        )
        return out
    out["x_n_opt"] = _loglog_slope(np.array([p["budget_flops"] for p in good]), np.array([p["n_opt"] for p in good]))
    return out


def allocation_from_joint(fit: LawFit | None, why: str = "") -> dict:
    """Chinchilla approach 3: N_opt ∝ C^x, D_opt ∝ C^y with x = b/(a+b), y = a/(a+b), bootstrap CIs."""
    if fit is None:
        return {"not_available": why or "no joint law L(N, D) was fitted"}
    return {
        "x_n_opt": fit.params["x_n_opt"],
        "y_d_opt": fit.params["y_d_opt"],
        "ci95": {"x_n_opt": fit.ci95["x_n_opt"], "y_d_opt": fit.ci95["y_d_opt"]},
        "note": "D is the training-set size; compute is assumed ∝ N·D here (the law's allocation rule)",
    }


def fit_frontier(
    curves: list[Curve], n_boot: int = 200, seed: int = 0, n_budgets: int = 6
) -> dict:
    """Seed-mean frontier, L(C) = α·C^−β on it, approaches 1 and 2, each with bootstrap 95 % CIs.

    The bootstrap resamples seeds within sizes; when every size has one seed it draws whole size curves.
    Besides the frontier (:func:`seed_mean_envelope`) the result holds ``sizes`` (one row per size:
    seeds, run ids, keys kept), ``n_sizes`` and ``bootstrap`` ("seeds within sizes" | "whole size curves").
    """
    lad = _Ladder(curves)
    full = lad.means()
    front = lad.front(*full)
    within = bool(np.any(lad.n_seeds[lad.has_points] >= 2))
    seeds_txt = lad.seeds_text()
    env = np.unique(front["size"])
    n_env_runs = int(lad.n_seeds[env].sum())
    if within:
        boot_txt = (f"percentile bootstrap over seeds within sizes ({seeds_txt}; each size's seeds, their "
                    "deviations from the seed mean scaled by √(n/(n−1)), drawn with replacement, seed means and "
                    "envelope recomputed)")
        n_units = int(lad.n_seeds[env][lad.n_seeds[env] >= 2].sum())
        unit = "seed runs (of sizes with ≥ 2 seeds) on the envelope"
    else:
        boot_txt = (f"percentile bootstrap over whole size curves ({seeds_txt}: nothing to resample within "
                    "sizes; curves drawn with replacement, envelope recomputed, draw counts as weights)")
        n_units, unit = len(env), "runs on the envelope"
    out: dict = {"frontier": front, "n_runs": len(curves), "n_sizes": int(lad.has_points.sum()),
                 "sizes": lad.table(), "bootstrap": "seeds within sizes" if within else "whole size curves"}
    ladder = lad.ladder_n_params()
    if len(front["flops"]) < 3:
        out["law"] = {"not_available": f"the frontier has {len(front['flops'])} points; L(C) needs ≥ 3"}
        out["approach1"] = approach1(front, ladder=ladder)
        out["approach2"] = approach2(curves, np.zeros(0))
        return jsonable_frontier(out)
    logx = np.log(front["flops"])[:, None]
    ms = fit_scaled_huber(POWER, logx, np.log(front["loss"]))
    resid = POWER.predict_log(ms.theta, logx) - np.log(front["loss"])
    budgets = isoflop_budgets(curves, n_budgets)
    a1 = approach1(front, ladder=ladder)
    a2 = approach2(curves, budgets)

    rng = np.random.default_rng(seed)
    if within:
        draws = [rng.integers(0, s.n_seeds, (n_boot, s.n_seeds)) for s in lad.groups]
        boot_means = lad.resampled_means(draws)
        inflated = lad.inflated_curves()
    else:
        picks = rng.integers(0, len(lad.groups), (n_boot, len(lad.groups)))
    boot_x1, boot_y1, boot_x2, fronts, drawn = [], [], [], [], []
    for b in range(n_boot):
        if within:
            fb = lad.front(*(m[b] for m in boot_means))
            weight = np.ones(len(fb["flops"]))
            sample = [inflated[s.runs[j]] for s, d in zip(lad.groups, draws) for j in d[b]]
        else:
            counts = np.bincount(picks[b], minlength=len(lad.groups))
            fb = lad.front(*full, present=counts > 0)
            weight = counts[fb["size"]].astype(float)  # a size drawn twice weighs twice in the refit
            sample = [curves[lad.groups[i].runs[0]] for i in picks[b]]
        if len(fb["flops"]) >= 3:
            fronts.append((np.log(fb["flops"]), np.log(fb["loss"]), weight))
            drawn.append(b)
        if "x_n_opt" in a1:
            r1 = approach1(fb)
            boot_x1.append(r1.get("x_n_opt", np.nan))
            boot_y1.append(r1.get("y_samples_seen", np.nan))
        if "x_n_opt" in a2:
            boot_x2.append(approach2(sample, budgets).get("x_n_opt", np.nan))
    boot_theta = np.zeros((0, 2))
    every = np.full((n_boot, 2), np.nan)  # one row per resample drawn; NaN where it gave no L(C)
    if fronts:
        n_max = max(len(c) for c, _, _ in fronts)
        lx = np.zeros((len(fronts), n_max, 1))
        ly = np.zeros((len(fronts), n_max))
        w = np.zeros((len(fronts), n_max))
        for i, (c, y, d) in enumerate(fronts):
            lx[i, :, 0], ly[i] = c[0], y[0]  # padding: weight 0
            lx[i, : len(c), 0], ly[i, : len(c)], w[i, : len(c)] = c, y, d * len(c) / d.sum()
        th, ok = refit_many(POWER, lx, ly, w, ms.top_thetas, delta=ms.delta)
        boot_theta = th[ok]
        every[np.asarray(drawn)[ok]] = th[ok]
    params = params_from_theta("power", ms.theta)
    samples = {k: np.array([params_from_theta("power", t)[k] if np.all(np.isfinite(t)) else np.nan for t in every])
               for k in params}
    ci = {k: list(percentile_ci(samples[k])) for k in params}
    unident = not_identified(params, ci, len(boot_theta), n_boot)
    unreliable = {k: why for k, why in unreliable_intervals(params, ci, samples, n_boot, n_units, unit).items()
                  if k not in unident}
    ss_tot = float(np.sum((np.log(front["loss"]) - np.log(front["loss"]).mean()) ** 2))
    out["law"] = {
        "formula": "L = α·C^−β",
        "params": params,
        "ci95": ci,
        "theta": [float(v) for v in ms.theta],
        "converged": ms.converged,
        "not_identified": unident,
        "interval_unreliable": unreliable,
        "flags": fit_flags(ms.converged, ms.n_starts, unident, unreliable),
        "boot_theta": boot_theta,
        "n_points": len(front["flops"]),
        "n_frontier_sizes": len(env),
        "n_frontier_runs": n_env_runs,
        "n_boot_ok": len(boot_theta),
        "rmse_log": float(np.sqrt(np.mean(resid**2))),
        "r2_log": 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else float("nan"),
        "method": (
            f"lower envelope over sizes of seed-mean curves (mean log FLOPs and mean log L at each report key "
            f"every seed of a size reached) from {len(curves)} curves; sum of Huber(δ={ms.delta:.3g}) of log residuals "
            f"(1.345 × the robust scale of a least-squares fit's residuals), "
            f"L-BFGS from the full grid ({ms.n_grid} starts), optimum "
            f"{'converged' if ms.converged else 'NOT converged'}; 95 % CI: {boot_txt}, {len(boot_theta)}/{n_boot} "
            f"resamples gave a frontier of ≥ 3 points (seed {seed}); the envelope holds points of {len(env)} "
            f"sizes ({n_env_runs} runs)"
        ),
    }
    if "x_n_opt" in a1:
        s1 = {"x_n_opt": np.array(boot_x1, dtype=float), "y_samples_seen": np.array(boot_y1, dtype=float)}
        a1["ci95"] = {k: list(percentile_ci(v)) for k, v in s1.items()}
        est1 = {k: a1[k] for k in s1 if k in a1}
        a1["interval_unreliable"] = unreliable_intervals(est1, a1["ci95"], s1, n_boot, n_units, unit)
        a1["method"] = f"sizes on the seed-mean envelope at {len(a1['budgets_flops'])} budgets; 95 % CI: {boot_txt}"
    if "x_n_opt" in a2:
        s2 = {"x_n_opt": np.array(boot_x2, dtype=float)}
        a2["ci95"] = {"x_n_opt": list(percentile_ci(s2["x_n_opt"]))}
        a2["interval_unreliable"] = unreliable_intervals({"x_n_opt": a2["x_n_opt"]}, a2["ci95"], s2, n_boot)
        a2["method"] = f"IsoFLOP minima of log L averaged over seeds per size; 95 % CI: {boot_txt}"
    out["approach1"] = a1
    out["approach2"] = a2
    return jsonable_frontier(out)


def jsonable_frontier(out: dict) -> dict:
    """The result with arrays as lists, except ``law.boot_theta`` kept as an array for bands."""
    boot = out.get("law", {}).pop("boot_theta", None)
    res = jsonable(out)
    if boot is not None:
        res["law"]["boot_theta"] = boot
    return res


def frontier_band(law: dict, flops: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(L̂, lower, upper) of the fitted L(C) at ``flops`` from its bootstrap samples."""
    logx = np.log(np.asarray(flops, dtype=float))[:, None]
    mid = np.exp(POWER.predict_log(np.asarray(law["theta"]), logx))
    boot = law.get("boot_theta")
    if boot is None or len(boot) == 0:
        return mid, mid, mid
    logp = POWER.predict_log(np.asarray(boot), logx)
    q = 100 * (1 - level) / 2
    return mid, np.exp(np.percentile(logp, q, axis=0)), np.exp(np.percentile(logp, 100 - q, axis=0))

