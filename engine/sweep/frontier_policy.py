"""Early stopping on the compute axis that keeps the compute-optimal frontier: the policy, state in, decisions out.

Why not ASHA. Successive halving ranks trials at equal FLOPs and keeps the best fraction. Across a ladder of
model sizes the smaller model is ahead at every budget before the two curves cross, so the first rung cuts
every larger size, including the one that wins the largest budgets: the frontier it leaves is one small
model's learning curve.

The structure this policy relies on. Under the usual form L(N, D) = E + A·N^−α + B·D^−β with D = C/(k·N)
structures seen for C FLOPs, the difference L_small(C) − L_large(C) rises monotonically with C, so two sizes'
curves cross at most once (reference-facts, "Early stopping on the compute axis"). A per-run offset (a seed
that is a little luckier at every budget) shifts a curve in log L by a constant and keeps that property;
only per-report noise can break it, and the noise margin below covers it. The same form makes each curve
convex in log-log: its slope d log L / d log C = −β·(B·D^−β)/L shrinks in magnitude as C grows, so the
steepest secant measured so far bounds every later slope.

The rules, applied at each FLOP rung once every live trial has reported it (a barrier: decisions depend on the
rung table only, never on which trial arrived first):

1. Compare sizes only at equal FLOP rungs, on annealed losses (each rung is scored after a cooldown branch,
   engine.loop.cooldown), and on the seed mean of log L per size.
2. **Overtaken**: a size is stopped once some *larger* size has been better by more than the noise margin at
   ``consecutive`` (2) consecutive rungs. By the single crossing the larger size stays ahead at every later
   budget, so the stopped size cannot return to the lower envelope; its points so far stay in the frontier.
3. **Out of reach**: a size that is behind is stopped only when an optimistic bound on its remaining
   improvement cannot reach the envelope by the last budget: its loss projected to the last budget along its
   steepest secant so far (plus a slack, and never shallower than ``min_slope``) stays above the best
   loss measured at this rung (the envelope can only fall) by more than the margin. Real curves are convex
   only once training is under way: in warmup, or on the plateau a large model sits on for its first steps,
   the loss falls slowly and then fast. So the measured secants are used as a bound only once the latest is
   no steeper than the one before (the curve has started to flatten); until then the assumed steepest slope
   is ``slope_cap`` (or a measured secant plus slack, if steeper).
4. Never stop a size because a smaller one is ahead (that is rule 3's bound, not a ranking).

The noise margin is in log L (a relative difference). A seed's offset that persists over rungs keeps the
single crossing, so the margin covers the noise that changes from rung to rung: with several seeds per size
it is ``margin_z`` standard errors of a difference of two seed means, from the residuals of each trial about
its size's seed mean once the trial's own mean offset is removed (pooled over sizes and rungs so far), and
never below ``margin_min``; with one seed per size nothing separates the two, and it is ``margin_default``.

Which anchors this follows (reference-facts): Hägele et al. 2024 (arXiv 2405.18392) and MiniCPM (arXiv
2404.06395) train one run per size with cooldown branches and stop nothing; they are this engine's rungs,
and the grid is their protocol. Learning-curve extrapolation (LC-PFN, arXiv 2310.20447; freeze-thaw) stops a
run when a learned prior says it will not beat the incumbent; it would save more, but its prior was trained
on curves of another kind (HPO benchmarks, not a ladder of sizes at equal FLOPs), it is a sample from a
posterior rather than a bound, and it adds a network to a decision that must be explainable. We chose
bounds from the law's own shape (single crossing, convexity in log-log): weaker savings, no prior, and a
stated reason for every cut.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

RUNNING = "running"
STOPPED = "stopped"
FAILED = "failed"
FINISHED = "finished"


@dataclass(frozen=True)
class Arm:
    """One trial: its id, its size (trials of one size differ only by seed) and the size's cost order."""

    trial_id: str
    size: str
    order: float  # larger = more FLOPs per structure (the parameter count, or the preset's rank)
    seed: int = 0


@dataclass
class PolicyConfig:
    """The rule's knobs (see the module docstring)."""

    budgets: list[float]  # the rungs in FLOPs, increasing; the last is every trial's full budget
    consecutive: int = 2  # rungs in a row a larger size must lead by more than the margin
    margin_default: float = 0.03  # log-L margin with one seed per size (3 %)
    margin_min: float = 0.01  # floor of the margin measured from seeds
    margin_z: float = 2.0  # standard errors of a difference of seed means
    slope_cap: float = 1.0  # steepest log-log slope assumed before a size has a secant
    slope_slack: float = 0.1  # added to the steepest measured secant
    min_slope: float = 0.3  # a measured secant shallower than this is not trusted as a bound

    def __post_init__(self) -> None:
        b = [float(x) for x in self.budgets]
        if len(b) < 2 or any(x <= 0 for x in b) or any(y <= x for x, y in itertools.pairwise(b)):
            raise ValueError(f"budgets must be ≥ 2 increasing positive FLOP counts, got {self.budgets}")
        self.budgets = b
        if self.consecutive < 1 or self.margin_default < 0 or self.margin_min < 0 or self.slope_cap <= 0:
            raise ValueError("consecutive ≥ 1, margins ≥ 0 and slope_cap > 0 are required")


@dataclass
class Decision:
    """Why a trial was stopped, at which rung."""

    trial_id: str
    rung: int
    rule: str  # "overtaken" | "out of reach"
    why: str


@dataclass
class FrontierPolicy:
    """The policy's state: the arms, every rung report, the rungs decided so far and the stops.

    Drive it with :meth:`report` (idempotent), :meth:`fail`, :meth:`advance`; ask it with :meth:`status`,
    :meth:`waiting_for`. :meth:`to_dict` / :meth:`from_dict` round-trip it through JSON.
    """

    arms: list[Arm]
    config: PolicyConfig
    losses: dict[str, dict[int, float]] = field(default_factory=dict)  # trial → rung → annealed loss
    decided: int = -1  # rungs 0..decided are decided
    stops: dict[str, Decision] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    log: list[dict] = field(default_factory=list)  # one entry per decided rung (margin, means, stops)

    def __post_init__(self) -> None:
        ids = [a.trial_id for a in self.arms]
        if len(set(ids)) != len(ids):
            raise ValueError("trial ids must be unique")
        self._arm = {a.trial_id: a for a in self.arms}
        for a in self.arms:
            self.losses.setdefault(a.trial_id, {})

    # -- inputs ------------------------------------------------------------------------------
    @property
    def n_rungs(self) -> int:
        return len(self.config.budgets)

    def report(self, trial_id: str, rung: int, loss: float) -> None:
        """Record a trial's annealed loss at a rung (a repeat of the same report is ignored)."""
        if trial_id not in self._arm:
            raise KeyError(f"unknown trial {trial_id!r}")
        if not 0 <= rung < self.n_rungs:
            raise ValueError(f"rung {rung} outside 0..{self.n_rungs - 1}")
        if not (math.isfinite(loss) and loss > 0):
            self.fail(trial_id)  # a diverged run leaves the comparison
            return
        self.losses[trial_id].setdefault(int(rung), float(loss))

    def fail(self, trial_id: str) -> None:
        """The trial ended without finishing (error, divergence): no rung waits for it."""
        if trial_id in self._arm and trial_id not in self.stops:
            self.failed.add(trial_id)

    # -- queries -----------------------------------------------------------------------------
    def status(self, trial_id: str) -> str:
        if trial_id in self.stops:
            return STOPPED
        if trial_id in self.failed:
            return FAILED
        if self.n_rungs - 1 in self.losses[trial_id]:
            return FINISHED
        return RUNNING

    def live_at(self, rung: int) -> list[str]:
        """Trials expected at ``rung``: not failed, not stopped at an earlier rung."""
        return [a.trial_id for a in self.arms if a.trial_id not in self.failed
                and not (a.trial_id in self.stops and self.stops[a.trial_id].rung < rung)]

    def waiting_for(self, rung: int) -> list[str]:
        """Live trials that have not reported ``rung`` yet (the barrier holds until this is empty)."""
        return [t for t in self.live_at(rung) if rung not in self.losses[t]]

    def may_continue(self, trial_id: str, rung: int) -> bool | None:
        """After reporting ``rung``: True (go on), False (stopped), None (not decided yet: wait)."""
        if trial_id in self.stops:
            return False
        if trial_id in self.failed:
            return False
        if rung >= self.n_rungs - 1:
            return True
        return True if self.decided >= rung else None

    # -- decisions ---------------------------------------------------------------------------
    def advance(self) -> list[Decision]:
        """Decide every rung whose reports are complete, in order; the stops made now."""
        made: list[Decision] = []
        while self.decided + 1 < self.n_rungs - 1 and not self.waiting_for(self.decided + 1):
            made += self._decide(self.decided + 1)
            self.decided += 1
        return made

    def _size_means(self, rung: int) -> dict[str, tuple[float, float, int]]:
        """size → (mean log L over its seeds at ``rung``, within-size variance, seeds) for sizes live there.

        A size's seeds are the trials still live at the rung being decided (stops act on whole sizes)."""
        groups: dict[str, list[float]] = {}
        for t in self.live_at(rung):
            if rung in self.losses[t]:
                groups.setdefault(self._arm[t].size, []).append(math.log(self.losses[t][rung]))
        out = {}
        for size, vals in groups.items():
            m = sum(vals) / len(vals)
            var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else float("nan")
            out[size] = (m, var, len(vals))
        return out

    def margin(self, rung: int) -> float:
        """The noise margin in log L for comparisons at ``rung`` (module docstring).

        A seed's offset that persists over rungs shifts its curve and keeps the single crossing, so the margin
        covers only the noise that changes from rung to rung: the residual of each trial's log L about its
        size's seed mean, less the trial's own mean residual over rungs 0..``rung``, pooled over sizes.
        """
        cfg = self.config
        ss, dof, seeds = 0.0, 0, []
        for size in sorted({a.size for a in self.arms}):  # a fixed order: the same sum in every process
            trials = [t for t in self.live_at(rung) if self._arm[t].size == size]
            rungs = [r for r in range(rung + 1) if all(r in self.losses[t] for t in trials)]
            if len(trials) < 2 or len(rungs) < 2:
                continue
            seeds.append(len(trials))
            table = [[math.log(self.losses[t][r]) for r in rungs] for t in trials]
            col = [sum(row[j] for row in table) / len(trials) for j in range(len(rungs))]
            for row in table:
                dev = [v - c for v, c in zip(row, col)]
                off = sum(dev) / len(dev)
                ss += sum((d - off) ** 2 for d in dev)
            dof += (len(trials) - 1) * (len(rungs) - 1)
        if dof == 0:
            return cfg.margin_default
        sigma = math.sqrt(ss / dof)
        return max(cfg.margin_min, cfg.margin_z * sigma * math.sqrt(2.0 / min(seeds)))

    def _order(self, size: str) -> float:
        return max(a.order for a in self.arms if a.size == size)

    def _decide(self, rung: int) -> list[Decision]:
        cfg = self.config
        means = self._size_means(rung)
        margin = self.margin(rung)
        entry: dict[str, Any] = {"rung": rung, "margin": margin, "mean_log_loss": {s: m[0] for s, m in means.items()},
                                 "stopped": []}
        if not means:  # every trial failed or was stopped before this rung: nothing to compare
            self.log.append(entry)
            return []
        stop: dict[str, tuple[str, str]] = {}
        # rule 2: overtaken by a larger size at `consecutive` rungs in a row
        first = rung - cfg.consecutive + 1
        if first >= 0:
            history = [self._size_means(r) if r != rung else means for r in range(first, rung + 1)]
            margins = [margin] * len(history)
            for small in means:
                for large in means:
                    if self._order(large) <= self._order(small):
                        continue
                    if all(small in h and large in h and h[small][0] - h[large][0] > m
                           for h, m in zip(history, margins)):
                        why = f"{large} better by > {margin:.3g} in log L at rungs {first}–{rung}"
                        stop[small] = ("overtaken", why)
                        break
        # rule 3: out of reach of the best loss measured now, even along its steepest plausible slope
        best = min(m[0] for m in means.values())
        horizon = math.log(cfg.budgets[-1] / cfg.budgets[rung])
        for size, (m, _, _) in means.items():
            if size in stop or m - best <= margin:
                continue
            slope = self._optimistic_slope(size, rung)
            floor = m - slope * horizon
            if floor > best + margin:
                stop[size] = ("out of reach", f"at slope {slope:.3g} it reaches log L {floor:.4g} by the last budget, "
                                              f"above the best now {best:.4g} + {margin:.3g}")
        made = []
        for a in self.arms:
            if a.size in stop and a.trial_id not in self.stops and a.trial_id not in self.failed:
                rule, why = stop[a.size]
                d = Decision(a.trial_id, rung, rule, why)
                self.stops[a.trial_id] = d
                made.append(d)
                entry["stopped"].append(a.trial_id)
        self.log.append(entry)
        return made

    def _optimistic_slope(self, size: str, rung: int) -> float:
        """The steepest |d log L / d log C| the size can keep from ``rung`` on (module docstring)."""
        cfg = self.config
        pts = []
        for r in range(rung + 1):
            h = self._size_means(r)
            if size in h:
                pts.append((math.log(cfg.budgets[r]), h[size][0]))
        secants = [-(y1 - y0) / (x1 - x0) for (x0, y0), (x1, y1) in itertools.pairwise(pts)]
        if len(secants) < 2 or secants[-1] > secants[-2]:
            # no sign yet that the curve has entered its convex part: a large model in warmup or on its initial
            # plateau falls slowly first and fast later, so its secants so far bound nothing
            return max([cfg.slope_cap, *(v + cfg.slope_slack for v in secants)])
        return max(max(secants) + cfg.slope_slack, cfg.min_slope)

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": "engine-frontier-policy/1",
            "config": asdict(self.config),
            "arms": [asdict(a) for a in self.arms],
            "losses": {t: {str(r): v for r, v in rs.items()} for t, rs in self.losses.items()},
            "decided": self.decided,
            "stops": {t: asdict(d) for t, d in self.stops.items()},
            "failed": sorted(self.failed),
            "log": self.log,
        }

    @classmethod
    def from_dict(cls, values: dict) -> FrontierPolicy:
        policy = cls(
            arms=[Arm(**a) for a in values["arms"]],
            config=PolicyConfig(**values["config"]),
            losses={t: {int(r): float(v) for r, v in rs.items()} for t, rs in values["losses"].items()},
            decided=int(values["decided"]),
            stops={t: Decision(**d) for t, d in values["stops"].items()},
            failed=set(values["failed"]),
            log=list(values.get("log", [])),
        )
        return policy

    def stopped_at(self) -> dict[str, int]:
        """trial → the rung after which it was stopped."""
        return {t: d.rung for t, d in self.stops.items()}


def run_synchronous(policy: FrontierPolicy, losses: dict[str, list[float]]) -> FrontierPolicy:
    """Drive ``policy`` through full learning curves (trial → annealed loss per rung) as a barrier would:
    every live trial reports a rung, the rung is decided, stopped trials report nothing more."""
    for rung in range(policy.n_rungs):
        for t in policy.live_at(rung):
            if policy.status(t) == RUNNING and rung < len(losses[t]):
                policy.report(t, rung, losses[t][rung])
            elif rung >= len(losses[t]):
                policy.fail(t)  # its curve ends early: a failed trial
        policy.advance()
    return policy
