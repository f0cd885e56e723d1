"""dmol: exact, numerically safe output distributions for autoregressive models.

Distributions (``torch.distributions`` objects, component axis last) and their functional
training/sampling twins. The vocoder (:mod:`dmol.wavenet`) and the audio tools
(:mod:`dmol.audio`) build on these; the distributions know nothing of audio.
"""

from dmol.coupled import CoupledDiscretizedLogisticMixture, coupled_mix_logistic_loss
from dmol.gaussian import (
    DiscretizedGaussianMixture,
    MixtureOfGaussians,
    mix_gaussian_loss,
    sample_mix_gaussian,
)
from dmol.logistic import (
    DiscretizedLogisticMixture,
    discretized_mix_logistic_loss,
    sample_discretized_mix_logistic,
)
from dmol.mulaw import (
    MuLawCategorical,
    inv_mulaw_quantize,
    mulaw_decode,
    mulaw_encode,
    mulaw_loss,
    mulaw_quantize,
    sample_mulaw,
)
from dmol.units import bits_per_dim

__all__ = [
    "CoupledDiscretizedLogisticMixture",
    "DiscretizedGaussianMixture",
    "DiscretizedLogisticMixture",
    "MixtureOfGaussians",
    "MuLawCategorical",
    "bits_per_dim",
    "coupled_mix_logistic_loss",
    "discretized_mix_logistic_loss",
    "inv_mulaw_quantize",
    "mix_gaussian_loss",
    "mulaw_decode",
    "mulaw_encode",
    "mulaw_loss",
    "mulaw_quantize",
    "sample_discretized_mix_logistic",
    "sample_mix_gaussian",
    "sample_mulaw",
]
__version__ = "0.1.0"
