"""Drop-in replacements that reproduce the numbers of the well-known implementations.

- :mod:`dmol.compat.r9y9`: r9y9/wavenet_vocoder ``mixture.py`` (MoL and Gaussian losses/samplers)
- :mod:`dmol.compat.pixelcnn`: openai/pixel-cnn / pixel-cnn-pp channel-coupled image loss

They keep the originals' approximations on purpose; see ``docs/compat.md`` for where the
numbers differ from the exact distributions in :mod:`dmol`.
"""

from dmol.compat import pixelcnn, r9y9

__all__ = ["pixelcnn", "r9y9"]
