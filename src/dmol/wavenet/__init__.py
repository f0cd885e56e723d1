"""A WaveNet vocoder built on dmol's distributions (mel spectrogram -> waveform).

The model imports the distributions through its heads (:mod:`dmol.wavenet.heads`); nothing in
the distributions imports this package. Training: :func:`dmol.wavenet.train.train` / ``dmol train``
(the submodule is not shadowed by a re-export); synthesis:
:mod:`dmol.wavenet.synthesis` / ``dmol vocode``.
"""

from dmol.wavenet.checkpoint import load_model
from dmol.wavenet.heads import make_head
from dmol.wavenet.model import WaveNet
from dmol.wavenet.presets import PRESETS, TrainConfig, WaveNetConfig, get_preset

__all__ = [
    "PRESETS",
    "TrainConfig",
    "WaveNet",
    "WaveNetConfig",
    "get_preset",
    "load_model",
    "make_head",
]
