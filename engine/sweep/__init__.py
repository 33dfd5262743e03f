"""The scaling engine: search spaces → Ray Tune trials → MLflow runs.

- :mod:`engine.sweep.spaces`   YAML search spaces, validated into typed dataclasses; the trial grid
- :mod:`engine.sweep.trial`    one Tune trial: the loop directly (1 worker) or a Ray Train DDP job
- :mod:`engine.sweep.runner`   ``run_sweep``: Tuner, ASHA on cumulative FLOPs, resume, summary
- :mod:`engine.sweep.progress` the progress ledger: per-trial state, FLOPs used, the live line
- :mod:`engine.sweep.asha`     ASHA that records which trials a rung stopped
- :mod:`engine.sweep.mlflow_callback` trials → MLflow child runs from the driver; completion markers after the close
- :mod:`engine.sweep.storage`  trial state every node reaches (shared path or s3://, gs://), the start-time check
- :mod:`engine.sweep.lock`     one driver per sweep
- :mod:`engine.sweep.tracking` MLflow parent/child runs keyed by sweep name and trial id
- :mod:`engine.sweep.sysmetrics` a trial's CPU/memory/GPU use, merged into its reports (MLflow ``system/...``)
- :mod:`engine.sweep.datasets` the sweep's data as an MLflow dataset input of every trial run
- :mod:`engine.sweep.registry` the best trial of each size registered in MLflow's Model Registry
"""
