"""Checkpoints inside an epoch: every K steps, every T minutes, at the step after a SIGTERM; a trial killed there
resumes at the next batch and ends bit for bit like an uninterrupted one."""

from __future__ import annotations

import os
import signal
import threading

import pytest
import torch

from engine import metrics as M
from engine.config import CheckpointConfig, DataConfig, TrialConfig, trial_config_from_dict
from engine.errors import ConfigError, Preempted
from engine.loop.checkpoint import load_checkpoint
from engine.loop.loop import run_trial
from engine.loop.preemption import CheckpointPolicy, SigtermWatch

STEPS_PER_EPOCH = 6  # 24 training structures, 4 a batch


class _KilledError(Exception):
    """The process dying right after a checkpoint (what a SIGKILL there would leave on disk)."""


class Reporter:
    """Records reports and step checkpoints; ``kill_at``: die after the step checkpoint of that step;
    ``sigterm_at``: send this process a SIGTERM after that step."""

    def __init__(self, kill_at: int | None = None, sigterm_at: int | None = None) -> None:
        self.rows: list[dict] = []
        self.saved_at: list[tuple[int, int]] = []  # (step, batches done in its epoch) of each step checkpoint
        self.kill_at, self.sigterm_at = kill_at, sigterm_at

    def report(self, metrics, checkpoint_dir=None):
        self.rows.append(dict(metrics))

    def on_batch(self, epoch, index, total, step):
        if step == self.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_checkpoint(self, run_dir):
        ck = load_checkpoint(f"{run_dir}/checkpoint.pt")
        self.saved_at.append((ck["step"], ck["epoch_position"]["batches_done"]))
        if ck["step"] == self.kill_at:
            raise _KilledError


def _config(every_steps: int | None = None, **kw) -> TrialConfig:
    return TrialConfig(model="fcn", model_config={"hidden": 16, "num_rbf": 8}, epochs=3, batch_size=4, seed=5,
                       data=DataConfig(max_val=6), checkpoint=CheckpointConfig(every_steps=every_steps), **kw)


def _stable(rows: list[dict]) -> list[dict]:
    timed = (M.WALL_S, M.CHECKPOINT, M.THROUGHPUT_STRUCT_S, M.THROUGHPUT_ATOMS_S)
    return [{k: v for k, v in r.items() if k not in timed} for r in rows]


def _assert_same_end(a_dir, b_dir) -> None:
    a, b = load_checkpoint(a_dir / "checkpoint.pt"), load_checkpoint(b_dir / "checkpoint.pt")
    assert a["finished"] and b["finished"] and a["step"] == b["step"] and a["flops_cum"] == b["flops_cum"]
    for key, value in a["model_state"].items():
        assert torch.equal(b["model_state"][key], value), key
    for key, value in a["optimizer_state"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(b["optimizer_state"]["state"][key][name], tensor), (key, name)


@pytest.fixture(scope="module")
def straight(tiny_splits, tmp_path_factory):
    """The uninterrupted trial (no step cadence): its reports and run folder."""
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    rep = Reporter()
    run_trial(_config(), run_dir, reporter=rep, splits=tiny_splits)
    return rep.rows, run_dir


def test_a_step_checkpoint_is_written_at_the_configured_steps(straight, tiny_splits, tmp_path):
    rows, straight_dir = straight
    rep = Reporter()
    run_trial(_config(every_steps=4), tmp_path / "run", reporter=rep, splits=tiny_splits)
    # 4 steps after the last save of any kind (the epoch ends at 6, 12 restart the count)
    assert rep.saved_at == [(4, 4), (10, 4), (16, 4)]
    assert _stable(rep.rows) == _stable(rows)  # saving does not change the run
    _assert_same_end(straight_dir, tmp_path / "run")


def test_a_trial_killed_after_a_step_checkpoint_resumes_at_the_next_batch(straight, tiny_splits, tmp_path):
    rows, straight_dir = straight
    killed = Reporter(kill_at=10)
    with pytest.raises(_KilledError):
        run_trial(_config(every_steps=4), tmp_path / "run", reporter=killed, splits=tiny_splits)
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ck["step"] == 10 and ck["epoch"] == 2 and ck["epoch_position"]["batches_done"] == 4
    resumed = Reporter()
    run_trial(_config(every_steps=4), tmp_path / "run", reporter=resumed, splits=tiny_splits)
    assert _stable(killed.rows + resumed.rows) == _stable(rows)
    _assert_same_end(straight_dir, tmp_path / "run")


def test_a_sigterm_saves_at_the_next_step_boundary_and_stops(straight, tiny_splits, tmp_path):
    rows, straight_dir = straight
    before = signal.getsignal(signal.SIGTERM)
    stopped = Reporter(sigterm_at=9)
    with pytest.raises(Preempted, match="step 9"):
        run_trial(_config(), tmp_path / "run", reporter=stopped, splits=tiny_splits)
    assert signal.getsignal(signal.SIGTERM) is before  # the loop's handler is gone again
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ck["step"] == 9 and ck["epoch_position"]["batches_done"] == 3 and not ck["finished"]
    resumed = Reporter()
    run_trial(_config(), tmp_path / "run", reporter=resumed, splits=tiny_splits)
    assert _stable(stopped.rows + resumed.rows) == _stable(rows)
    _assert_same_end(straight_dir, tmp_path / "run")


def test_the_time_cadence_counts_from_the_last_save_of_any_kind():
    now = [0.0]
    policy = CheckpointPolicy(CheckpointConfig(every_minutes=2.0), clock=lambda: now[0])
    now[0] = 119.0
    assert not policy.due(5)
    now[0] = 120.0
    assert policy.due(6) and not policy.preempted
    policy.mark_saved(6)  # an epoch end or a rung resets it too
    now[0] = 200.0
    assert not policy.due(7)


def test_a_dying_ray_worker_waits_for_the_save_only_while_taking_steps():
    """Off the main thread (a Tune trainable) the watch is an atexit hook: Ray's SIGTERM handler exits the process."""
    watch = SigtermWatch(grace_s=5.0)
    entered = threading.Event()

    def body():
        with watch:
            entered.set()

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert entered.is_set()
    watch._at_exit()  # blocked in a report: nothing to wait for
    assert not watch.requested.is_set()
    watch.in_steps = True
    threading.Timer(0.05, watch.saved.set).start()  # the loop saving at its next step
    watch._at_exit()
    assert watch.requested.is_set() and watch.saved.is_set()


@pytest.mark.parametrize("bad", [{"every_steps": 0}, {"every_minutes": 0}, {"every_minutes": -1.0}])
def test_checkpoint_cadence_is_validated(bad):
    with pytest.raises(ConfigError, match=r"checkpoint\.every_"):
        trial_config_from_dict({"checkpoint": bad})


def test_the_default_cadence_is_half_an_hour_without_a_step_count():
    assert TrialConfig().checkpoint == CheckpointConfig(every_steps=None, every_minutes=30.0)


def test_engine_train_saves_and_exits_75_on_sigterm_then_resumes(tmp_path):
    """A real process: SIGTERM once its first epoch is reported (the engine's own metrics.jsonl), then rerun."""
    import subprocess
    import sys
    import time

    import ase.io

    from engine.errors import PREEMPTED_EXIT_CODE
    from tests.loop.conftest import emt_records

    data = tmp_path / "tiny.extxyz"
    ase.io.write(data, [r.to_atoms() for r in emt_records(24, seed=2)])
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "engine.train", "--data", str(data), "--model", "fcn", "--model-config", "hidden=8",
           "num_rbf=4", "--epochs", "60", "--batch-size", "2", "--threads", "1", "--no-progress",
           "--run-dir", str(run_dir)]
    env = {**os.environ, "ENGINE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:  # epoch 1 is reported
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err
    assert "preempted: SIGTERM: checkpoint saved at step" in err
    ck = load_checkpoint(run_dir / "checkpoint.pt")
    assert not ck["finished"] and ck["epoch_position"] is not None and ck["epoch_position"]["batches_done"] >= 1
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    end = load_checkpoint(run_dir / "checkpoint.pt")
    assert end["finished"] and end["epoch"] == 60 and end["step"] > ck["step"]


def test_a_sigterm_to_the_trial_and_its_dataloader_workers_still_saves(tmp_path):
    """A node shutting down signals every process: the lazy path's workers ignore it, the trial saves and stops."""
    import multiprocessing
    import time

    from engine.data.dataset import load_splits
    from engine.data.lazy import close_environments
    from engine.data.store import write_aselmdb
    from tests.loop.conftest import emt_records

    class GroupSigterm(Reporter):
        def on_batch(self, epoch, index, total, step):
            if step == self.sigterm_at:
                workers = multiprocessing.active_children()  # the DataLoader workers
                assert workers
                for child in workers:
                    os.kill(child.pid, signal.SIGTERM)
                time.sleep(0.5)  # a step's time: a worker that died of it has been reported (SIGCHLD) by now
                assert all(child.is_alive() for child in workers)
                os.kill(os.getpid(), signal.SIGTERM)

    write_aselmdb(emt_records(40, seed=4), tmp_path / "data" / "part-0.aselmdb")
    cfg = _config()
    cfg.data = DataConfig(path=str(tmp_path / "data"), val_fraction=0.2, test_fraction=0.1, max_val=None,
                          normalization_size=16, cache_dir=str(tmp_path / "cache"), lazy=True, num_workers=2,
                          prefetch_factor=2)
    try:
        straight = Reporter()
        run_trial(cfg, tmp_path / "straight", reporter=straight, splits=load_splits(cfg.data, progress=False))
        stopped = GroupSigterm(sigterm_at=4)
        with pytest.raises(Preempted, match="step 4"):
            run_trial(cfg, tmp_path / "stopped", reporter=stopped, splits=load_splits(cfg.data, progress=False))
        resumed = Reporter()
        run_trial(cfg, tmp_path / "stopped", reporter=resumed, splits=load_splits(cfg.data, progress=False))
    finally:
        close_environments()
    assert _stable(stopped.rows + resumed.rows) == _stable(straight.rows)
    _assert_same_end(tmp_path / "straight", tmp_path / "stopped")
