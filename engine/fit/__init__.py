"""Scaling-law fitting: arrays in, fits out (numpy/scipy only, no MLflow).

- :func:`engine.fit.powerlaw.fit_axis` — L = α·X^−β and L = E + α·X^−β, form chosen by leave-one-out
- :func:`engine.fit.joint.fit_joint` — L(N, D) = E + A/N^a + B/D^b and the allocation exponents
- :func:`engine.fit.frontier.fit_frontier` — compute frontier, L(C), Chinchilla approaches 1–2
- :func:`engine.fit.extrapolate.extrapolation_check` — refit without the largest scale, predict it
"""
