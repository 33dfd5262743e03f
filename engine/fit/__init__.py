"""Scaling-law fitting: arrays in, fits out (numpy/scipy only, no MLflow).

- :mod:`engine.fit.shape`, :mod:`engine.fit.objective`, :mod:`engine.fit.lbfgs`, :mod:`engine.fit.multistart` —
  the law's log-sum-exp shape, the summed Huber objective (δ from the residuals' scale), the optimizers, the
  multi-start fit
- :func:`engine.fit.fitlaw.fit_law` — any law from runs, with bootstrap intervals and trust flags
  (:mod:`engine.fit.trust`: convergence, identification, prediction intervals)
- :func:`engine.fit.powerlaw.fit_axis` — L = α·X^−β and L = E + α·X^−β, form chosen by leave-one-out
- :func:`engine.fit.joint.fit_joint` — L(N, D) = E + A/N^a + B/D^b and the allocation exponents
- :func:`engine.fit.frontier.fit_frontier` — compute frontier, L(C), Chinchilla approaches 1–2
- :func:`engine.fit.extrapolate.extrapolation_check` — refit without the largest scale, predict it
  ("not a test" with < 2 residual degrees of freedom)
- :func:`engine.fit.verdict.grade` — one label per fit: law, trend, plateau or at baseline
"""
