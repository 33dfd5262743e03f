"""The scaling engine: search spaces → Ray Tune trials → MLflow runs.

- :mod:`engine.sweep.spaces`   YAML search spaces, validated into typed dataclasses; the trial grid
- :mod:`engine.sweep.trial`    one Tune trial: the loop directly (1 worker) or a Ray Train DDP job
- :mod:`engine.sweep.runner`   ``run_sweep``: Tuner, ASHA on cumulative FLOPs, resume, summary
- :mod:`engine.sweep.progress` driver callbacks: live progress, FLOP ledger, MLflow logging
- :mod:`engine.sweep.tracking` MLflow parent/child runs keyed by sweep name and trial id
"""
