"""The report stage: MLflow → tidy frame → fits → figures → report.md / report.html / fits.json.

- :mod:`engine.report.collect` — a sweep's runs and metric histories from MLflow (pandas frame)
- :mod:`engine.report.analyze` — every axis and metric fitted, as one JSON-ready dict
- :mod:`engine.report.figures` — PNG plots; :mod:`engine.report.document` / :mod:`engine.report.html` — rendering
- :func:`engine.report.build.build_report` — the whole stage; ``python -m engine.report`` is its CLI
"""
