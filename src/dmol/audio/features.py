"""Audio I/O and the log-mel recipe that conditions the vocoder.

One :class:`MelRecipe` describes how a waveform becomes a log-mel spectrogram. It is stored
next to every dataset (``recipe.json``) and inside every checkpoint, so training, synthesis
and evaluation compute exactly the same features.

The features are a natural-log *magnitude* (not power) mel spectrogram::

    mel = log(max(M @ |STFT(audio)|, log_floor))          # (frames, n_mels), float32

with a Hann window, ``center=True`` STFT frames zero-padded by ``n_fft // 2`` at both ends, and
librosa's Slaney-normalized mel filterbank. Frame ``i`` is centred on sample ``i * hop_length``
and exactly ``len(audio) // hop_length`` frames are kept (the last, partial hop is dropped), so
``frames * hop_length`` samples of audio pair with ``frames`` mel frames.

Example::

    >>> recipe = recipe_for("tiny")
    >>> mel = recipe.compute(np.zeros(640, dtype=np.float32))
    >>> mel.shape
    (10, 20)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MEL_RECIPES",
    "AudioInputWarning",
    "CorruptAudioError",
    "MelRecipe",
    "decode_g722",
    "griffin_lim",
    "load_audio",
    "recipe_for",
]

G722_SAMPLE_RATE = 16000  # the wideband G.722 codec always decodes to 16 kHz


class CorruptAudioError(ValueError):
    """An audio file exists but cannot be decoded (truncated, not audio, empty, NaN samples)."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"corrupt or unreadable audio file {self.path}: {reason}")


class AudioInputWarning(UserWarning):
    """Something about an input file the user should know: it was clipped when it was recorded
    (flat runs at full scale), or it was upsampled (it has no content above its own Nyquist
    frequency). ``path`` names the file, ``reason`` says what (without the path)."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class MelRecipe:
    """How audio becomes a log-mel spectrogram; see the module docstring for the formula.

    Example::

        >>> r = MelRecipe(16000, 512, 64, 512, 20, 0.0, 8000.0)
        >>> MelRecipe.from_dict(r.to_dict()) == r
        True
        >>> r.frame_rate
        250.0
    """

    sample_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int
    fmin: float
    fmax: float
    log_floor: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"MelRecipe.{name} must be a positive integer, got {v!r}")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if not 0.0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= fmin < fmax <= sample_rate/2 = {self.sample_rate / 2:g}, "
                f"got fmin {self.fmin!r}, fmax {self.fmax!r}"
            )
        if not (math.isfinite(self.log_floor) and self.log_floor > 0):
            raise ValueError(f"log_floor must be a positive finite float, got {self.log_floor!r}")

    # ---- serialization -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict with every field (ints stay ints, floats stay floats)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MelRecipe:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise a ValueError naming them."""
        if not isinstance(d, dict):
            raise TypeError(f"MelRecipe.from_dict expects a dict, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        unknown = sorted(set(d) - set(names))
        missing = [k for k in required if k not in d]
        if unknown or missing:
            raise ValueError(
                f"invalid mel recipe: unknown keys {unknown}, missing keys {missing} "
                f"(expected {names})"
            )
        ints = {"sample_rate", "n_fft", "hop_length", "win_length", "n_mels"}
        kwargs = {}
        for k, v in d.items():
            if k in ints:
                if isinstance(v, float) and v.is_integer():
                    v = int(v)
                kwargs[k] = v
            else:
                kwargs[k] = float(v)
        return cls(**kwargs)

    # ---- derived quantities ------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        """Mel frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def log_min(self) -> float:
        """Smallest value :meth:`compute` can return: ``log(log_floor)``."""
        return math.log(self.log_floor)

    @property
    def log_max(self) -> float:
        """Largest value :meth:`compute` can return for audio in [-1, 1].

        |STFT| <= sum(window) when |x| <= 1, so each mel bin is at most sum(window) times the
        largest row sum of the filterbank: a hard bound, not a guess.
        """
        w_sum = self.win_length / 2  # sum of a periodic Hann window of win_length samples
        return math.log(max(w_sum * float(_mel_basis(self).sum(axis=1).max()), self.log_floor))

    # ---- features ----------------------------------------------------------------------
    def compute(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel of ``audio``: (T,) float in [-1, 1] -> float32 (T // hop_length, n_mels).

        Example::

            >>> recipe_for("tiny").compute(np.zeros(1000, np.float32)).shape  # 1000 // 64
            (15, 20)
        """
        import librosa
        from threadpoolctl import threadpool_limits

        x = np.asarray(audio)
        if x.ndim != 1:
            raise ValueError(f"audio must be 1-D (T,), got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"audio must be floating point in [-1, 1], got dtype {x.dtype}")
        frames = len(x) // self.hop_length
        if frames == 0:
            raise ValueError(
                f"audio has {len(x)} samples, fewer than one hop ({self.hop_length}): no mel frames"
            )
        if not np.isfinite(x).all():
            raise ValueError(f"audio contains {int((~np.isfinite(x)).sum())} NaN/inf sample(s)")
        peak = float(np.abs(x).max())
        if peak > 1.0:
            raise ValueError(f"audio must lie in [-1, 1], got peak magnitude {peak:.6g}")
        with warnings.catch_warnings():
            # clips shorter than n_fft are fine: their frames are zero-padded on purpose
            warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
            spec = np.abs(
                librosa.stft(
                    x.astype(np.float32),
                    n_fft=self.n_fft,
                    hop_length=self.hop_length,
                    win_length=self.win_length,
                    window="hann",
                    center=True,
                    pad_mode="constant",  # zeros work for any length; reflect needs > n_fft/2
                )
            )  # (1 + n_fft // 2, 1 + T // hop)
        # one BLAS thread: a threaded sgemm splits the sums by thread count, which moved the
        # mel's last bits (up to ~5e-7) between OMP_NUM_THREADS=1 and 2, and with them
        # Griffin-Lim's voicing error in the third decimal; one thread gives the same bits
        # under any setting
        with threadpool_limits(1, user_api="blas"):
            mel = _mel_basis(self) @ spec[:, :frames]
        # the floor keeps log finite in digital silence and bounds the dynamic range
        return np.log(np.maximum(mel, self.log_floor)).T.astype(np.float32, copy=False)

    def validate_mel(self, mel: np.ndarray, *, tol: float = 0.5) -> np.ndarray:
        """Check a (frames, n_mels) log-mel against this recipe; return it as float32.

        Raises a ValueError on the wrong ndim or n_mels, NaN/inf, or values outside
        ``[log_min - tol, log_max + tol]`` (typically a mel made with another normalization,
        e.g. dB or [0, 1]-scaled features).
        """
        m = np.asarray(mel)
        if m.ndim != 2:
            raise ValueError(f"mel must be 2-D (frames, n_mels), got shape {m.shape}")
        if m.shape[1] != self.n_mels:
            hint = " (transposed? expected (frames, n_mels))" if m.shape[0] == self.n_mels else ""
            raise ValueError(
                f"mel has {m.shape[1]} mel bins, the recipe has n_mels={self.n_mels}; "
                f"got shape {m.shape}{hint}"
            )
        if m.shape[0] == 0:
            raise ValueError("mel has 0 frames")
        if not np.issubdtype(m.dtype, np.floating):
            raise TypeError(f"mel must be floating point, got dtype {m.dtype}")
        if not np.isfinite(m).all():
            raise ValueError(f"mel contains {int((~np.isfinite(m)).sum())} NaN/inf value(s)")
        lo, hi = float(m.min()), float(m.max())
        if lo < self.log_min - tol or hi > self.log_max + tol:
            raise ValueError(
                f"mel values span [{lo:.4g}, {hi:.4g}] but a natural-log magnitude mel of this "
                f"recipe lies in [{self.log_min:.4g}, {self.log_max:.4g}] (tol {tol:g}): "
                f"wrong normalization or recipe?"
            )
        return m.astype(np.float32, copy=False)


@functools.lru_cache(maxsize=16)
def _mel_basis(recipe: MelRecipe) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) Slaney mel filterbank, cached per recipe."""
    import librosa

    return librosa.filters.mel(
        sr=recipe.sample_rate,
        n_fft=recipe.n_fft,
        n_mels=recipe.n_mels,
        fmin=recipe.fmin,
        fmax=recipe.fmax,
    ).astype(np.float32)


MEL_RECIPES: dict[str, MelRecipe] = {
    # r9y9/wavenet_vocoder LJSpeech MoL preset shapes (r9y9 then dB-normalizes; we keep log)
    "r9y9-ljspeech-mol": MelRecipe(22050, 1024, 256, 1024, 80, 125.0, 7600.0),
    "small-16k": MelRecipe(16000, 1024, 256, 1024, 80, 80.0, 7600.0),
    "lp-16k": MelRecipe(16000, 1024, 256, 1024, 80, 80.0, 7600.0),
    "lp-16k-pe": MelRecipe(16000, 1024, 256, 1024, 80, 80.0, 7600.0),
    "lp-16k-ltp": MelRecipe(16000, 1024, 256, 1024, 80, 80.0, 7600.0),
    "lp-16k-ltpe": MelRecipe(16000, 1024, 256, 1024, 80, 80.0, 7600.0),
    "lp-16k-ltpe-clock": MelRecipe(16000, 1024, 256, 1024, 80, 80.0, 7600.0),
    "lp-16k-ltpe-clock-tracked": MelRecipe(16000, 1024, 256, 1024, 80, 80.0, 7600.0),
    "tiny": MelRecipe(16000, 512, 64, 512, 20, 0.0, 8000.0),
}


def recipe_for(preset: str) -> MelRecipe:
    """The :class:`MelRecipe` registered under ``preset`` in :data:`MEL_RECIPES`."""
    try:
        return MEL_RECIPES[preset]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown mel preset {preset!r}: known presets are {sorted(MEL_RECIPES)}"
        ) from None


# ---- audio I/O -----------------------------------------------------------------------------
def decode_g722(path: str | Path) -> np.ndarray:
    """Decode a raw 64 kbit/s G.722 file (as shipped by Asterisk) to float32 16 kHz mono."""
    try:
        import G722
    except ImportError as e:
        raise ImportError("decoding .g722 needs the G722 package: pip install G722") from e
    data = Path(path).read_bytes()
    if not data:
        raise CorruptAudioError(path, "empty file")
    pcm = np.asarray(G722.G722(G722_SAMPLE_RATE, 64000).decode(data), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0


# PCM subtypes read by soundfile and their bits per sample (the rails are +-(2^(bits-1)))
_PCM_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}
_CLIP_RUN = 4  # this many equal full-scale samples in a row: clipped, not just loud


def _clipped_samples(x: np.ndarray, bits: int) -> int:
    """Samples of integer PCM ``x`` (read as float, (T, C)) that lie in runs of at least
    ``_CLIP_RUN`` at either rail: the flat tops a recording clipped at the source leaves."""
    lsb = 2.0 ** -(bits - 1)
    hi, lo = x >= 1.0 - 1.5 * lsb, x <= -1.0 + 0.5 * lsb
    total = 0
    for rail in (hi, lo):
        for col in rail.T:
            if col.sum() < _CLIP_RUN:
                continue
            # lengths of the runs of True
            edges = np.diff(np.concatenate([[0], col.astype(np.int8), [0]]))
            runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
            total += int(runs[runs >= _CLIP_RUN].sum())
    return total


def load_audio(path: str | Path, sample_rate: int, *, peak: float | None = 1.0) -> np.ndarray:
    """Read wav/flac/ogg (soundfile) or .g722 as mono float32 at ``sample_rate``.

    Channels are averaged; other rates are resampled with ``librosa.resample``. Samples are
    never clipped: a float file (or the resampling) may go beyond full scale, and then the
    whole signal is scaled down so that its peak is ``peak`` (``None``: values are returned
    as they are, possibly outside [-1, 1]). An :class:`AudioInputWarning` says when an
    integer file was clipped when it was recorded, or when it is upsampled. A missing file
    raises FileNotFoundError, an undecodable one :class:`CorruptAudioError`.

    Example::

        >>> audio = load_audio("speech.wav", 16000)   # (T,) float32 in [-1, 1]
    """
    import soundfile as sf

    path = Path(path)
    if peak is not None and not (math.isfinite(peak) and peak > 0):
        raise ValueError(f"peak must be positive and finite or None, got {peak!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no such audio file: {path}")
    if path.suffix.lower() == ".g722":
        x, sr = decode_g722(path), G722_SAMPLE_RATE
        clipped, n = _clipped_samples(x[:, None], 16), len(x)
    else:
        try:
            info = sf.info(str(path))
            x2, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError) as e:
            raise CorruptAudioError(path, str(e)) from None
        bits = _PCM_BITS.get(info.subtype)
        clipped, n = (_clipped_samples(x2, bits) if bits and x2.size else 0), x2.size
        x = x2.mean(axis=1)
    if x.size == 0:
        raise CorruptAudioError(path, "contains no samples")
    if not np.isfinite(x).all():
        raise CorruptAudioError(path, "contains NaN/inf samples")
    if clipped:
        warnings.warn(AudioInputWarning(
            path, f"{clipped} of {n} samples ({100 * clipped / n:.2g}%) sit in flat runs at full "
                  f"scale: the recording was clipped at the source (distorted peaks)"),
            stacklevel=2)
    if sr != sample_rate:
        import librosa

        if sr < sample_rate:
            warnings.warn(AudioInputWarning(
                path, f"upsampled from {sr} Hz to {sample_rate} Hz: it has nothing above "
                      f"{sr / 2:g} Hz"), stacklevel=2)
        x = librosa.resample(x, orig_sr=sr, target_sr=sample_rate)
    x = x.astype(np.float32, copy=False)
    top = float(np.abs(x).max())
    if peak is not None and top > peak:  # scale, never clip: the waveform keeps its shape
        x = (x * (peak / top)).astype(np.float32)
    return x


def griffin_lim(
    mel: np.ndarray, recipe: MelRecipe, n_iter: int = 60, seed: int | None = 0
) -> np.ndarray:
    """Invert a log-mel with librosa's NNLS mel inversion + Griffin-Lim: the no-network baseline.

    ``mel`` (frames, n_mels) -> float32 (frames * hop_length,) in [-1, 1]. The initial phase
    is random; ``seed`` fixes it so evaluation tables repeat (None: a fresh draw).
    """
    import librosa

    m = recipe.validate_mel(mel)
    # a center=True STFT of frames * hop samples has frames + 1 columns: repeat the last one
    m = np.concatenate([m, m[-1:]], axis=0)
    magnitude = librosa.feature.inverse.mel_to_stft(
        np.exp(m.T), sr=recipe.sample_rate, n_fft=recipe.n_fft, power=1.0,
        fmin=recipe.fmin, fmax=recipe.fmax,
    )
    audio = librosa.griffinlim(
        magnitude,
        n_iter=n_iter,
        hop_length=recipe.hop_length,
        win_length=recipe.win_length,
        window="hann",
        center=True,
        pad_mode="constant",
        length=(m.shape[0] - 1) * recipe.hop_length,
        random_state=seed,
    )
    return np.clip(audio, -1.0, 1.0).astype(np.float32)
