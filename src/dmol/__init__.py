"""dmol: exact, numerically safe output distributions for autoregressive models."""

__version__ = "0.1.0"
