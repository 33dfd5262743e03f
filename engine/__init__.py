"""Ray-distributed hyperparameter and scaling-law engine for neural material models."""

__version__ = "0.1.0"
