"""Objective vocoder metrics: score a generated waveform against the recording it reproduces.

Every function takes two 1-D float arrays in [-1, 1] (``ref`` = natural speech, ``gen`` = the
vocoder's copy synthesis of it) and returns float64 numbers where lower is better and identical
audio scores 0. The comparison is frame by frame, without time warping: the two signals must be
aligned, as copy synthesis from the reference's own features is. Lengths may differ by at most
:data:`MAX_TRIM` samples (a vocoder emits ``frames * hop`` samples, so its output rarely
matches the reference's length exactly); the longer signal's tail is then dropped.

- :func:`mel_cepstral_distortion`: spectral envelope (WORLD + mel-cepstrum), dB
- :func:`log_mel_distance`: mean absolute difference of natural-log mel magnitudes, Np
- :func:`multi_resolution_stft_distance`: spectral convergence + log-STFT L1, dimensionless
- :func:`f0_metrics`: pitch RMSE on jointly voiced frames (Hz, cent) and V/UV error (fraction)

Example::

    >>> sr = 16000
    >>> t = np.arange(sr) / sr
    >>> ref = 0.5 * np.sin(2 * np.pi * 220 * t)
    >>> m = evaluate_pair(ref, ref, sr)
    >>> m["mcd_db"], m["log_mel_l1"], m["vuv_error"]
    (0.0, 0.0, 0.0)
    >>> print(metrics_table({"copy": m}))  # doctest: +SKIP

See ``docs/metrics.md`` for the definitions and what a good vocoder scores.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dmol.audio.features import MelRecipe

__all__ = [
    "MAX_TRIM",
    "STFT_RESOLUTIONS",
    "bits_per_sample",
    "evaluate_pair",
    "evaluate_pairs",
    "f0_metrics",
    "f0_track",
    "log_mel_distance",
    "mel_cepstral_distortion",
    "metrics_table",
    "multi_resolution_stft_distance",
    "multi_resolution_stft_parts",
]

MAX_TRIM = 512  # samples: more than one hop of every mel recipe in use, ~32 ms at 16 kHz
STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = (
    (512, 128, 512),
    (1024, 256, 1024),
    (2048, 512, 2048),
)  # (n_fft, hop, win)
F0_METHODS = ("harvest", "dio")
_DB = 10.0 / math.log(10.0)  # dB per neper of power; MCD's customary scale factor


# ---- input checks ------------------------------------------------------------------------------
def _audio(name: str, x: Any) -> np.ndarray:
    """One waveform as float64 (T,), or a ValueError/TypeError naming what is wrong with it."""
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        hint = " (integer PCM? divide int16 samples by 32768)" if a.dtype.kind in "iu" else ""
        raise TypeError(
            f"{name} must be a floating point array in [-1, 1], got dtype {a.dtype}" + hint
        )
    if a.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D mono audio (T,), got shape {a.shape}"
            + (" (squeeze or average the channel axis)" if a.ndim == 2 else "")
        )
    if a.size == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(a)).sum())} NaN/inf sample(s)")
    peak = float(np.abs(a).max())
    if peak > 1.0:
        raise ValueError(f"{name} must lie in [-1, 1], got peak magnitude {peak:.6g}")
    return a.astype(np.float64, copy=False)


def _pair(ref: Any, gen: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check both signals and trim the longer one's tail when they differ by <= MAX_TRIM."""
    x, y = _audio("ref", ref), _audio("gen", gen)
    if abs(len(x) - len(y)) > MAX_TRIM:
        ratio = max(len(x), len(y)) / min(len(x), len(y))
        raise ValueError(
            f"ref has {len(x)} samples and gen {len(y)}: they differ by more than MAX_TRIM = "
            f"{MAX_TRIM}, so they are not aligned copies (length ratio {ratio:.4g}: a different "
            f"sample rate, or a missing trim?)"
        )
    n = min(len(x), len(y))
    return x[:n], y[:n]


def _rate(sr: Any) -> int:
    """``sr`` is a positive integer, or a pair (ref_sr, gen_sr) that must agree."""
    if isinstance(sr, (tuple, list)):
        if len(sr) != 2:
            raise ValueError(f"sr must be an int or a pair (ref_sr, gen_sr), got {sr!r}")
        a, b = (_rate(s) for s in sr)
        if a != b:
            raise ValueError(
                f"sample rates differ: ref is at {a} Hz, gen at {b} Hz; resample one first "
                f"(e.g. librosa.resample)"
            )
        return a
    if isinstance(sr, bool) or not isinstance(sr, numbers.Integral) or sr <= 0:
        raise ValueError(f"sr must be a positive integer sample rate in Hz, got {sr!r}")
    return int(sr)


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _import_eval() -> tuple[Any, Any]:
    """pysptk and pyworld, with a pointer to the extra that installs them."""
    try:
        with warnings.catch_warnings():  # both still import pkg_resources; not our concern
            warnings.simplefilter("ignore")
            import pysptk
            import pyworld
    except ImportError as e:
        raise ImportError(
            f"this metric needs pysptk and pyworld ({e}): pip install 'dmol[eval]'"
        ) from e
    return pysptk, pyworld


# ---- WORLD analysis shared by MCD and F0 -------------------------------------------------------
def _f0(
    x: np.ndarray, sr: int, method: str, frame_period: float, f0_floor: float, f0_ceil: float
) -> tuple[np.ndarray, np.ndarray]:
    """WORLD F0 track (0 = unvoiced) and frame times, one frame every ``frame_period`` ms."""
    _, pw = _import_eval()
    if method not in F0_METHODS:
        raise ValueError(f"unknown f0 method {method!r}: expected one of {F0_METHODS}")
    if not 0 < f0_floor < f0_ceil < sr / 2:
        raise ValueError(
            f"need 0 < f0_floor < f0_ceil < sr/2 = {sr / 2:g}, "
            f"got f0_floor {f0_floor!r}, f0_ceil {f0_ceil!r}"
        )
    if not frame_period > 0:
        raise ValueError(f"frame_period must be positive (ms), got {frame_period!r}")
    x = np.ascontiguousarray(x)
    kw = dict(f0_floor=float(f0_floor), f0_ceil=float(f0_ceil), frame_period=float(frame_period))
    if method == "harvest":
        return pw.harvest(x, sr, **kw)
    f0, t = pw.dio(x, sr, **kw)
    return pw.stonemask(x, f0, t, sr), t  # dio is coarse; StoneMask refines each voiced value


def f0_track(
    audio: np.ndarray,
    sr: int,
    *,
    method: str = "harvest",
    frame_period: float = 5.0,
    f0_floor: float = 71.0,
    f0_ceil: float = 800.0,
) -> tuple[np.ndarray, np.ndarray]:
    """WORLD F0 contour of one signal: (f0 in Hz, 0 where unvoiced; frame times in s), (N,) each.

    ``method="harvest"`` is the more reliable voicing detector; ``"dio"`` (DIO + StoneMask) is
    an order of magnitude faster. Harvest calls a bare sinusoid unvoiced (it looks for harmonic
    structure), DIO tracks it. Frames are ``frame_period`` ms apart.

    Example::

        >>> tone = 0.5 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)
        >>> f0, times = f0_track(tone, 16000, method="dio")
        >>> round(float(np.median(f0[f0 > 0])))
        220
    """
    return _f0(_audio("audio", audio), _rate(sr), method, frame_period, f0_floor, f0_ceil)


def _mcep(
    x: np.ndarray, f0: np.ndarray, t: np.ndarray, sr: int, order: int, alpha: float, f0_floor: float
) -> np.ndarray:
    """(frames, order + 1) mel-cepstra of WORLD's F0-adaptive (CheapTrick) spectral envelope."""
    pysptk, pw = _import_eval()
    # CheapTrick smooths away the harmonics, so the low cepstra describe the envelope alone
    sp = pw.cheaptrick(np.ascontiguousarray(x), f0, t, sr, f0_floor=float(f0_floor))
    return pysptk.sp2mc(sp, order, alpha)


def _mcd_db(cx: np.ndarray, cy: np.ndarray) -> float:
    d = cx[:, 1:] - cy[:, 1:]  # c0 (log energy) left out: MCD compares envelope shape
    return float(np.mean(_DB * np.sqrt(2.0 * np.sum(d * d, axis=1))))


def _f0_scores(fx: np.ndarray, fy: np.ndarray) -> dict[str, float]:
    vx, vy = fx > 0, fy > 0
    both = vx & vy
    if both.any():
        err_hz = fy[both] - fx[both]
        err_cents = 1200.0 * np.log2(fy[both] / fx[both])
        rmse_hz = float(np.sqrt(np.mean(err_hz**2)))
        rmse_cents = float(np.sqrt(np.mean(err_cents**2)))
    else:  # no frame voiced in both: a pitch error is undefined, not zero
        rmse_hz = rmse_cents = math.nan
    return {
        "f0_rmse_hz": rmse_hz,
        "f0_rmse_cents": rmse_cents,
        "vuv_error": float(np.mean(vx != vy)),
        # the two directions of the error (they sum to it): a vocoder that hums in pauses
        # and one that loses weak voicing can have the same V/UV error
        "vuv_voiced_to_unvoiced": float(np.mean(vx & ~vy)),
        "vuv_unvoiced_to_voiced": float(np.mean(~vx & vy)),
    }


def _alpha(sr: int, alpha: float | None) -> float:
    if alpha is None:
        pysptk, _ = _import_eval()
        return float(pysptk.util.mcepalpha(sr))
    if not -1.0 < alpha < 1.0:
        raise ValueError(f"all-pass constant alpha must lie in (-1, 1), got {alpha!r}")
    return float(alpha)


def _order(order: int) -> int:
    order = _positive_int("order", order)
    if order > 200:
        raise ValueError(f"order {order} is implausibly large for a mel-cepstrum (24-40 usual)")
    return order


# ---- metrics -----------------------------------------------------------------------------------
def mel_cepstral_distortion(
    ref: np.ndarray,
    gen: np.ndarray,
    sr: int | tuple[int, int],
    *,
    order: int = 24,
    alpha: float | None = None,
    frame_period: float = 5.0,
    f0_method: str = "harvest",
    f0_floor: float = 71.0,
    f0_ceil: float = 800.0,
) -> float:
    """Mel-cepstral distortion in dB, averaged over frames (no DTW; c0 excluded).

    Each signal gets its own WORLD analysis (``f0_method`` F0, then the CheapTrick envelope
    every ``frame_period`` ms), converted to ``order`` + 1 mel-cepstral coefficients with
    all-pass constant ``alpha`` (default ``pysptk.util.mcepalpha(sr)``, 0.41 at 16 kHz). Per
    frame ``10/ln(10) * sqrt(2 * sum_{d=1..order} (c_d - c'_d)^2)``; the energy term c0 is
    left out so a gain change alone costs nothing.

    ``ref``, ``gen``: (T,) float in [-1, 1], equal length up to :data:`MAX_TRIM` samples.

    Example::

        >>> x = 0.5 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)
        >>> mel_cepstral_distortion(x, x, 16000)
        0.0
    """
    rate = _rate(sr)
    x, y = _pair(ref, gen)
    order, a = _order(order), _alpha(rate, alpha)
    cx, cy = (
        _mcep(
            s, *_f0(s, rate, f0_method, frame_period, f0_floor, f0_ceil), rate, order, a, f0_floor
        )
        for s in (x, y)
    )
    return _mcd_db(cx, cy)


def log_mel_distance(
    ref: np.ndarray,
    gen: np.ndarray,
    sr: int | tuple[int, int],
    *,
    n_fft: int = 1024,
    hop: int = 256,
    n_mels: int = 80,
    fmin: float = 0.0,
    fmax: float | None = None,
    log_floor: float = 1e-5,
) -> float:
    """Mean absolute difference of natural-log mel *magnitude* spectrograms, in nepers.

    The features are those of :class:`dmol.audio.features.MelRecipe` (Hann window, centred
    frames, Slaney mel filterbank, ``log(max(mel, log_floor))``), with ``win_length = n_fft``
    and ``fmax`` defaulting to ``sr / 2``. Multiply by ``20 / ln(10)`` (8.69) for dB.

    ``ref``, ``gen``: (T,) float in [-1, 1] with T >= ``hop``.

    Example::

        >>> x = 0.5 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)
        >>> log_mel_distance(x, x, 16000)
        0.0
    """
    rate = _rate(sr)
    x, y = _pair(ref, gen)
    recipe = MelRecipe(
        rate,
        _positive_int("n_fft", n_fft),
        _positive_int("hop", hop),
        n_fft,
        _positive_int("n_mels", n_mels),
        float(fmin),
        float(rate / 2 if fmax is None else fmax),
        float(log_floor),
    )
    mx, my = recipe.compute(x), recipe.compute(y)
    return float(np.mean(np.abs(mx.astype(np.float64) - my)))


def _stft_mag(x: np.ndarray, n_fft: int, hop: int, win: int) -> np.ndarray:
    import librosa

    s = librosa.stft(
        x,
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        window="hann",
        center=True,
        pad_mode="constant",
    )  # zero padding: any length works, reflect needs > n_fft/2
    # floor the power as Parallel WaveGAN does, so log and the ratio stay finite in silence
    return np.sqrt(np.maximum(s.real**2 + s.imag**2, 1e-7))


def _resolutions(resolutions: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    out = []
    for r in resolutions:
        if len(r) != 3:
            raise ValueError(f"each resolution is (n_fft, hop, win_length), got {r!r}")
        names = ("n_fft", "hop", "win")
        n_fft, hop, win = (_positive_int(k, v) for k, v in zip(names, r, strict=True))
        if win > n_fft:
            raise ValueError(f"win_length {win} exceeds n_fft {n_fft} in resolution {r!r}")
        out.append((n_fft, hop, win))
    if not out:
        raise ValueError("resolutions is empty: give at least one (n_fft, hop, win_length)")
    return out


def multi_resolution_stft_parts(
    ref: np.ndarray,
    gen: np.ndarray,
    *,
    resolutions: Sequence[Sequence[int]] = STFT_RESOLUTIONS,
) -> tuple[float, float]:
    """(spectral convergence, log-STFT-magnitude L1), each averaged over ``resolutions``.

    Per resolution ``(n_fft, hop, win_length)`` with Hann-windowed, centred STFT magnitudes
    ``X`` (ref) and ``Y`` (gen), each floored at sqrt(1e-7): spectral convergence is
    ``||X - Y||_F / ||X||_F`` and the magnitude term ``mean |log X - log Y|`` (natural log).

    Example::

        >>> x = 0.5 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)
        >>> multi_resolution_stft_parts(x, x)
        (0.0, 0.0)
    """
    x, y = _pair(ref, gen)
    sc = mag = 0.0
    res = _resolutions(resolutions)
    for n_fft, hop, win in res:
        mx, my = _stft_mag(x, n_fft, hop, win), _stft_mag(y, n_fft, hop, win)
        sc += float(np.linalg.norm(mx - my) / np.linalg.norm(mx))
        mag += float(np.mean(np.abs(np.log(mx) - np.log(my))))
    return sc / len(res), mag / len(res)


def multi_resolution_stft_distance(
    ref: np.ndarray,
    gen: np.ndarray,
    *,
    resolutions: Sequence[Sequence[int]] = STFT_RESOLUTIONS,
) -> float:
    """Multi-resolution STFT distance (Parallel WaveGAN's auxiliary loss): SC + log-mag L1.

    The sum of the two terms of :func:`multi_resolution_stft_parts`, each averaged over the
    ``(n_fft, hop, win_length)`` resolutions. Dimensionless; 0 for identical audio.

    Example::

        >>> x = 0.5 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)
        >>> multi_resolution_stft_distance(x, x)
        0.0
    """
    return float(sum(multi_resolution_stft_parts(ref, gen, resolutions=resolutions)))


def f0_metrics(
    ref: np.ndarray,
    gen: np.ndarray,
    sr: int | tuple[int, int],
    *,
    method: str = "harvest",
    frame_period: float = 5.0,
    f0_floor: float = 71.0,
    f0_ceil: float = 800.0,
) -> dict[str, float]:
    """Pitch accuracy with WORLD: F0 RMSE (Hz, cents) and the voicing error.

    F0 is tracked every ``frame_period`` ms by Harvest (``method="harvest"``, robust, slower)
    or DIO refined by StoneMask (``"dio"``, an order of magnitude faster) between ``f0_floor``
    and ``f0_ceil`` Hz. The RMSEs cover the frames voiced in both signals (NaN when there are
    none); cents are ``1200 * log2(f_gen / f_ref)``. ``vuv_error`` is the fraction of all
    frames whose voiced/unvoiced decision differs, the sum of ``vuv_voiced_to_unvoiced``
    (voiced in ``ref``, unvoiced in ``gen``) and ``vuv_unvoiced_to_voiced``.

    Example::

        >>> x = 0.5 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)
        >>> f0_metrics(x, x, 16000)["vuv_error"]
        0.0
    """
    rate = _rate(sr)
    x, y = _pair(ref, gen)
    fx, _ = _f0(x, rate, method, frame_period, f0_floor, f0_ceil)
    fy, _ = _f0(y, rate, method, frame_period, f0_floor, f0_ceil)
    return _f0_scores(fx, fy)


def evaluate_pair(
    ref: np.ndarray,
    gen: np.ndarray,
    sr: int | tuple[int, int],
    *,
    f0_method: str = "harvest",
    mcd_order: int = 24,
    n_fft: int = 1024,
    hop: int = 256,
    n_mels: int = 80,
) -> dict[str, float]:
    """Every metric of this module for one (reference, generated) pair, as float64 values.

    Keys: ``mcd_db``, ``log_mel_l1``, ``mrstft``, ``f0_rmse_hz``, ``f0_rmse_cents``,
    ``vuv_error``, ``vuv_voiced_to_unvoiced``, ``vuv_unvoiced_to_voiced`` (lower is better
    for all). One WORLD F0 analysis per signal serves both MCD and the pitch metrics.
    ``n_fft``/``hop``/``n_mels`` configure :func:`log_mel_distance`.

    Example::

        >>> x = 0.5 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)
        >>> sorted(evaluate_pair(x, x, 16000).values())
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    return evaluate_pairs(ref, [gen], sr, f0_method=f0_method, mcd_order=mcd_order,
                          n_fft=n_fft, hop=hop, n_mels=n_mels)[0]


def evaluate_pairs(
    ref: np.ndarray,
    gens: Sequence[np.ndarray],
    sr: int | tuple[int, int],
    *,
    f0_method: str = "harvest",
    mcd_order: int = 24,
    n_fft: int = 1024,
    hop: int = 256,
    n_mels: int = 80,
) -> list[dict[str, float]]:
    """:func:`evaluate_pair` of each signal in ``gens`` against the one reference ``ref``.

    The same numbers as calling :func:`evaluate_pair` for each, but the reference's WORLD
    analysis (F0 and mel-cepstra, the slow part) is done once per trimmed length: scoring
    several samplings of one utterance (``dmol evaluate --seeds``) costs one analysis each.
    """
    if isinstance(gens, np.ndarray) or not isinstance(gens, Sequence):
        raise TypeError(f"gens must be a list or tuple of 1-D signals, got {type(gens).__name__}")
    rate = _rate(sr)
    _audio("ref", ref)
    pairs = []
    for j, gen in enumerate(gens):  # every check before any analysis
        try:
            pairs.append(_pair(ref, gen))
        except ValueError as e:
            raise ValueError(f"gens[{j}]: {e}") from None
    order, a = _order(mcd_order), _alpha(rate, None)
    floor, ceil, period = 71.0, 800.0, 5.0
    analysed: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    out = []
    for x, y in pairs:
        if len(x) not in analysed:
            fx, tx = _f0(x, rate, f0_method, period, floor, ceil)
            analysed[len(x)] = fx, _mcep(x, fx, tx, rate, order, a, floor)
        fx, cx = analysed[len(x)]
        fy, ty = _f0(y, rate, f0_method, period, floor, ceil)
        scores = {
            "mcd_db": _mcd_db(cx, _mcep(y, fy, ty, rate, order, a, floor)),
            "log_mel_l1": log_mel_distance(x, y, rate, n_fft=n_fft, hop=hop, n_mels=n_mels),
            "mrstft": multi_resolution_stft_distance(x, y),
        }
        scores.update(_f0_scores(fx, fy))
        out.append(scores)
    return out


def bits_per_sample(nll_nats: float | np.ndarray) -> float | np.ndarray:
    """Convert a negative log-likelihood per sample from nats to bits (divide by ln 2).

    Accepts a number or an array (a CPU tensor works through ``np.asarray``); an 8-bit
    uniform guess scores 8 bits/sample, so e.g. 256-class mu-law NLLs read directly.

    Example::

        >>> bits_per_sample(math.log(256))
        8.0
    """
    a = np.asarray(nll_nats, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"nll_nats contains {int((~np.isfinite(a)).sum())} NaN/inf value(s)")
    b = a / math.log(2.0)
    return float(b) if b.ndim == 0 else b


# ---- reporting ---------------------------------------------------------------------------------
# key -> (column header with unit, format); unknown keys are shown as-is with 4 significant digits
COLUMNS: dict[str, tuple[str, str]] = {
    "mcd_db": ("MCD [dB]", ".2f"),
    "log_mel_l1": ("log-mel L1 [Np]", ".3f"),
    "mrstft": ("MR-STFT", ".3f"),
    "f0_rmse_hz": ("F0 RMSE [Hz]", ".2f"),
    "f0_rmse_cents": ("F0 RMSE [cent]", ".1f"),
    # four places: one frame in 600 of a 3 s prompt, the size of the gaps between vocoders
    "vuv_error": ("V/UV error [frac]", ".4f"),
    "vuv_voiced_to_unvoiced": ("V->UV [frac]", ".4f"),
    "vuv_unvoiced_to_voiced": ("UV->V [frac]", ".4f"),
    "bits_per_sample": ("NLL [bit/sample]", ".3f"),
}


def _cell(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "n/a" if math.isnan(f) else format(f, fmt)


def metrics_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A plain-text table: one row per system, one column per metric (headers carry units).

    Columns follow first appearance across rows; a metric a system lacks shows ``-``, a NaN
    (e.g. F0 RMSE with no jointly voiced frame) ``n/a``.

    Example::

        >>> print(metrics_table({"WaveNet": {"mcd_db": 4.2}, "Griffin-Lim": {"mcd_db": 9.87}}))
        system       MCD [dB]
        -----------  --------
        WaveNet          4.20
        Griffin-Lim      9.87
        lower is better in every column
    """
    if not isinstance(rows, Mapping) or not all(isinstance(r, Mapping) for r in rows.values()):
        raise TypeError("rows must map a system name to a dict of metric values")
    if not rows:
        raise ValueError("rows is empty: nothing to tabulate")
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    heads = ["system"] + [COLUMNS.get(k, (k, ""))[0] for k in keys]
    body = [
        [str(name)] + [_cell(r.get(k), COLUMNS.get(k, ("", ".4g"))[1]) for k in keys]
        for name, r in rows.items()
    ]
    widths = [max(len(line[i]) for line in [heads, *body]) for i in range(len(heads))]

    def fmt(cells: list[str]) -> str:
        right = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([cells[0].ljust(widths[0]), *right]).rstrip()

    lines = [fmt(heads), "  ".join("-" * w for w in widths), *map(fmt, body)]
    if all(k in COLUMNS for k in keys):
        lines.append("lower is better in every column")
    return "\n".join(lines)
