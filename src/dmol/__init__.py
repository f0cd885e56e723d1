"""dmol: exact, numerically safe output distributions for autoregressive models.

The distributions (`DiscretizedLogisticMixture`, ...) and their functional training/sampling
twins. The vocoder (`dmol.wavenet`) and audio tools (`dmol.audio`) build on these; the
distributions know nothing of audio.
"""

from dmol.logistic import (
    DiscretizedLogisticMixture,
    discretized_mix_logistic_loss,
    sample_discretized_mix_logistic,
)
from dmol.units import bits_per_dim

__all__ = [
    "DiscretizedLogisticMixture",
    "discretized_mix_logistic_loss",
    "sample_discretized_mix_logistic",
    "bits_per_dim",
]
__version__ = "0.1.0"
