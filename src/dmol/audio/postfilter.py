"""Post-filters for a vocoder's output: pitch (long-term) and spectral envelope.

:class:`PitchPostfilter` quietens the valleys between the harmonics of voiced speech;
:class:`EnvelopePostfilter` makes the output's own mel match the mel it was made from. Both
are streaming (state between calls; the same numbers whatever pieces the audio comes in).

**Pitch.**

A vocoder that *samples* its excitation draws noise at every step; in voiced frames that
noise fills the spectrum between the harmonics, and pitch trackers (WORLD, and listeners) then
hear a weaker periodicity than the recording's. Speech codecs have the same problem with
their quantization noise and answer it after decoding with a long-term post-filter (ITU-T
G.729's, Opus CELT's comb filter), a one-tap comb on the decoded signal::

    y[t] = (x[t] + g * x[t - T]) / (1 + g)

For a signal of period ``T`` it is the identity; between the harmonics of ``sr / T`` it
attenuates by ``(1 - g) / (1 + g)`` (-9.5 dB at g = 0.5), and white noise by
``(1 + g^2) / (1 + g)^2`` in power (-2.6 dB). Because ``y`` is a convex combination of two
input samples, it stays in [-1, 1] when ``x`` does.

Per frame of ``hop`` samples, ``T`` is the lag that maximizes the normalized correlation of
the frame (and the ``history`` frames before it) with the signal ``T`` samples back, searched
within ``search`` of the period of the frame's F0 estimate (the mel's, which the vocoder was
given): the lag of the *generated* signal, which may stray from the estimate. Without an
estimate (``f0=None``: a mel too coarse to resolve harmonics) every period of a speaking voice
is searched (``F0_MIN``..``f0_max``, by default ``F0_MAX``).
``g = gain * correlation``, or 0 below ``threshold`` (unvoiced frames and silence pass
unchanged). Frame ``f`` reads only samples up to its own end, so a streaming vocoder filters
each frame as it comes out, with no added latency. When ``T`` or ``g`` changes, the first half
of the frame crossfades from the previous frame's filter to the new one (as CELT does), so a
lag change makes no click.

**Envelope.** A sampled excitation is right on average but not frame by frame: in the loud
frames of held-out speech the shipped lineage's (step 30,000) energy at 125 Hz-1 kHz scatters around
the recording's with a standard deviation of 2.6 dB (Griffin-Lim's 1.2 dB; docs/quality.md,
session 9), which the multi-resolution STFT distance punishes. The mel the vocoder was given
says what each frame's band energies should be, so per frame of the recipe's STFT (same
window, hop and centring as :meth:`MelRecipe.compute`) each mel band gets the gain that brings
the output's mel to the given one, limited to ``max_gain_db``, spread over the FFT bins with
the filterbank's weights (bins outside the filterbank keep gain 1), and the frames are put back
together by weighted overlap-add (the analysis window again, normalized by the sum of its
squares: gain 1 everywhere gives the input back; where the windows barely cover a sample,
at the edges, it blends toward the input instead of dividing by a vanishing sum). Frame ``j``
reads audio up to ``j * hop - n_fft / 2 + n_fft``, so while streaming the output lags
:attr:`EnvelopePostfilter.latency` samples behind the input (``n_fft - hop`` when ``hop``
divides ``n_fft / 2``) until :meth:`EnvelopePostfilter.flush`.

Example::

    >>> post = PitchPostfilter(16000, 256, gain=0.5)
    >>> y = np.concatenate([post(x[i:i + 2560], f0[i // 256:i // 256 + 10])
    ...                     for i in range(0, len(x), 2560)])   # == pitch_postfilter(x, f0, ...)
    >>> env = EnvelopePostfilter(recipe, max_gain_db=6)
    >>> z = np.concatenate([env(y, mel), env.flush()])               # == envelope_postfilter(...)
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dmol.audio.features import MelRecipe, _mel_basis
from dmol.audio.pitch import F0_MAX, F0_MIN, check_f0_max

__all__ = ["EnvelopePostfilter", "PitchPostfilter", "envelope_postfilter", "pitch_postfilter"]

# the envelope filter's overlap-add divides by the summed squared windows (1.5 inside with Hann
# at hop n_fft / 4, the window peaks at 1); below this it blends toward its input instead
NORM_FLOOR = 0.1


def _real(name: str, v: object, lo: float, hi: float) -> float:
    """``v`` as a float in [lo, hi]; a one-line ValueError for bools, strings, NaN, out of range."""
    if isinstance(v, bool | np.bool_ | str | bytes) or not isinstance(v, int | float | np.number):
        raise ValueError(f"{name} must be a real number, got {v!r}")
    f = float(v)
    if not lo <= f <= hi:
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}], got {v!r}")
    return f


def _integer(name: str, v: object, lo: int) -> int:
    """``v`` as an int >= lo (an integral float is fine); a one-line ValueError otherwise."""
    f = _real(name, v, lo, math.inf)
    if not math.isfinite(f) or f != int(f):
        raise ValueError(f"{name} must be a whole number, got {v!r}")
    return int(f)


class PitchPostfilter:
    """Streaming long-term post-filter: call it with consecutive frames of audio.

    Args:
        sample_rate: Hz.
        hop_length: samples per frame (the mel's hop).
        gain: ``g`` at a correlation of 1, in [0, 1]; 0 passes the audio unchanged.
        threshold: correlations at or below it leave the frame unfiltered, in [0, 1).
        search: the lag is searched within ``[T0 / (1 + search), T0 * (1 + search)]``,
            ``T0 = sample_rate / f0``.
        history: frames before the current one that the correlation also reads.
        f0_max: the highest F0 (Hz) an estimate is taken at (higher ones are clipped) and
            searched without one: the ceiling of the estimate given (default 420).
    """

    def __init__(self, sample_rate: int, hop_length: int, *, gain: float = 0.5,
                 threshold: float = 0.3, search: float = 0.1, history: int = 2,
                 f0_max: float = F0_MAX) -> None:
        sample_rate, hop_length = _integer("sample_rate", sample_rate, 1), _integer(
            "hop_length", hop_length, 1)
        gain, threshold = _real("gain", gain, 0.0, 1.0), _real("threshold", threshold, 0.0, 1.0)
        search, history = _real("search", search, 0.0, 1.0), _integer("history", history, 0)
        if threshold == 1.0 or search in (0.0, 1.0):
            raise ValueError(f"threshold must be in [0, 1) and search in (0, 1), got "
                             f"{threshold}, {search}")
        self.sample_rate, self.hop, self.history = sample_rate, hop_length, history
        self.gain, self.threshold, self.search = gain, threshold, search
        self.f0_max = check_f0_max(f0_max)
        self.max_lag = math.ceil(self.sample_rate / F0_MIN * (1.0 + self.search))
        # the raw samples before the next frame (zeros before the first: silence, as synthesis)
        self._past = np.zeros(self.max_lag + self.history * self.hop)
        self._lag, self._g = 1, 0.0  # the previous frame's filter (g = 0: the identity)
        n = self.hop // 2  # crossfade length; sin^2 + cos^2 = 1, an equal-gain crossfade
        self._fade = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2

    def __call__(self, audio: np.ndarray, f0: np.ndarray | None) -> np.ndarray:
        """Filter the next frames: audio (n * hop,) and F0 estimates (n,) Hz (or None: search
        every period) -> float32 (n * hop,)."""
        if np.iscomplexobj(audio) or np.iscomplexobj(f0):
            raise ValueError("audio and f0 must be real")
        x_new = np.asarray(audio, dtype=np.float64)
        if x_new.ndim != 1 or x_new.size % self.hop:
            raise ValueError(f"audio must be 1-D, whole frames of {self.hop} samples, got "
                             f"shape {x_new.shape}")
        n = x_new.size // self.hop
        if f0 is None:  # no estimate: every frame searches the whole range
            periods = np.full(n, None)
        else:
            f0 = np.asarray(f0, dtype=np.float64)
            if f0.ndim != 1 or f0.size != n:
                raise ValueError(f"f0 must be 1-D, one value per frame: audio has {n} frames "
                                 f"of {self.hop} samples, f0 has shape {f0.shape}")
            if not np.isfinite(f0).all():
                raise ValueError("f0 must be finite")
            periods = self.sample_rate / np.clip(f0, F0_MIN, self.f0_max)
        if not np.isfinite(x_new).all():
            raise ValueError("audio must be finite")
        if self.gain == 0.0:
            return x_new.astype(np.float32)
        x, P, hop = np.concatenate([self._past, x_new]), self._past.size, self.hop
        out = np.empty(x_new.size)
        for i, period in enumerate(periods):
            s = P + i * hop  # the frame is x[s : s + hop]
            lag, g = self._choose(x, s, period)
            new = (x[s:s + hop] + g * x[s - lag:s - lag + hop]) / (1.0 + g)
            if (lag, g) != (self._lag, self._g):
                n, old_lag, old_g = self._fade.size, self._lag, self._g
                old = (x[s:s + n] + old_g * x[s - old_lag:s - old_lag + n]) / (1.0 + old_g)
                new[:n] = self._fade * new[:n] + (1.0 - self._fade) * old
            out[i * hop:(i + 1) * hop] = new
            self._lag, self._g = lag, g
        self._past = x[x.size - P:]
        return out.astype(np.float32)

    def _choose(self, x: np.ndarray, s: int, period: float | None) -> tuple[int, float]:
        """(lag, g) of the frame starting at x[s], its period estimate ``period`` samples
        (None: every period of F0_MIN .. f0_max)."""
        if period is None:
            lo, hi = (math.floor(self.sample_rate / self.f0_max),
                      math.ceil(self.sample_rate / F0_MIN))
        else:
            lo = max(2, math.floor(period / (1.0 + self.search)))
            hi = min(self.max_lag, math.ceil(period * (1.0 + self.search)))
        a, b = s - self.history * self.hop, s + self.hop
        seg = x[a:b]
        # row k of the view is x[a - hi + k : b - hi + k], the window ``hi - k`` samples back
        back = sliding_window_view(x[a - hi:b - lo], b - a)
        energy = float(seg @ seg)
        if energy == 0.0:
            return self._lag, 0.0
        corr = (back @ seg) / np.sqrt(np.einsum("ij,ij->i", back, back) * energy + 1e-20)
        k = int(np.argmax(corr))
        c = float(corr[k])
        return hi - k, (self.gain * c if c > self.threshold else 0.0)


def pitch_postfilter(audio: np.ndarray, f0: np.ndarray | None, sample_rate: int,
                     hop_length: int, **options: float) -> np.ndarray:
    """The post-filter over a whole utterance: (frames * hop,) audio, (frames,) F0 in Hz (or
    None) -> float32 (frames * hop,). ``options`` as :class:`PitchPostfilter` (gain, ...)."""
    return PitchPostfilter(sample_rate, hop_length, **options)(audio, f0)


class EnvelopePostfilter:
    """Streaming spectral-envelope post-filter: the output's mel brought to the given mel.

    Args:
        recipe: the mel recipe the given mel was made with (and the audio's sample rate).
        max_gain_db: the largest correction of one band in one frame, either way (dB, > 0).

    Call it with consecutive audio and the next log-mel frames (the vocoder's input), in any
    pieces (the two need not keep pace: a frame is used once its audio is there); it returns
    the samples that are complete, :meth:`flush` the rest at the end of the utterance. Two
    filters in a row (the second fed the first's output and the same mel) correct what the
    first's overlap-add left.
    """

    def __init__(self, recipe: MelRecipe, *, max_gain_db: float = 6.0) -> None:
        if not isinstance(recipe, MelRecipe):
            raise TypeError(f"recipe must be a MelRecipe, got {type(recipe).__name__}")
        max_gain_db = _real("max_gain_db", max_gain_db, 0.0, math.inf)
        if not (math.isfinite(max_gain_db) and max_gain_db > 0):
            raise ValueError(f"max_gain_db must be finite and > 0, got {max_gain_db}")
        self.recipe, self.hop, self.n_fft = recipe, recipe.hop_length, recipe.n_fft
        self.limit = float(max_gain_db) * math.log(10.0) / 20.0  # natural-log amplitude
        basis = _mel_basis(recipe).astype(np.float64)  # (n_mels, bins)
        self._basis = basis
        # each bin's share of each band: a bin between two bands gets the mean of their gains
        self._spread = basis / np.maximum(basis.sum(0, keepdims=True), 1e-12)
        win = np.hanning(recipe.win_length + 1)[:-1]  # periodic Hann, as the STFT uses
        pad = (self.n_fft - recipe.win_length) // 2
        self._win = np.pad(win, (pad, self.n_fft - recipe.win_length - pad))
        self._floor = math.log(recipe.log_floor)
        half = self.n_fft // 2
        # audio from sample -half (zeros before 0, as the recipe's centred, zero-padded STFT)
        self._x = np.zeros(half)
        self._acc = np.zeros(half)  # overlap-add sums and window-square sums from sample -half
        self._norm = np.zeros(half)
        self._start = -half  # the sample index of _x[0], _acc[0]
        self._mel = np.zeros((0, recipe.n_mels))  # given frames not yet used
        self._frame = 0  # the next STFT frame to process
        self._emitted = 0  # samples returned so far
        self._closed = False
        #: samples the output lags behind the input while streaming (a frame is filtered once
        #: its whole window has arrived, a sample returned once every window over it is done)
        hop = self.hop
        self.latency = hop * math.ceil((self.n_fft - half) / hop) - hop + half

    def __call__(self, audio: np.ndarray, mel: np.ndarray) -> np.ndarray:
        """Add the next audio samples (n,) and log-mel frames (k, n_mels); return the samples
        now complete, float32."""
        if self._closed:
            raise RuntimeError("this post-filter was flushed; start a new one")
        if np.iscomplexobj(audio) or np.iscomplexobj(mel):
            raise ValueError("audio and mel must be real")
        x = np.asarray(audio, dtype=np.float64)
        m = np.asarray(mel, dtype=np.float64)
        if m.ndim != 2 or m.shape[1] != self.recipe.n_mels:
            raise ValueError(f"mel must be (frames, {self.recipe.n_mels}), got shape {m.shape}")
        if x.ndim != 1:
            raise ValueError(f"audio must be 1-D, got shape {x.shape}")
        if not (np.isfinite(x).all() and np.isfinite(m).all()):
            raise ValueError("audio and mel must be finite")
        self._x = np.concatenate([self._x, x])
        self._acc = np.concatenate([self._acc, np.zeros(x.size)])
        self._norm = np.concatenate([self._norm, np.zeros(x.size)])
        self._mel = np.concatenate([self._mel, m])
        return self._run(final=False)

    def flush(self) -> np.ndarray:
        """End of the utterance: the remaining samples (the audio after the last frame is
        taken as silence, as the recipe's STFT pads it)."""
        if self._closed:
            raise RuntimeError("this post-filter was already flushed")
        self._closed = True
        return self._run(final=True)

    def _run(self, final: bool) -> np.ndarray:
        half, hop = self.n_fft // 2, self.hop
        end = self._start + self._x.size  # samples received: 0 .. end - 1
        frames = self._frame + self._mel.shape[0]  # given frames so far
        if final:  # silence after the end, for the last frames' windows (even past the audio)
            need = (frames - 1) * hop - half + self.n_fft - end
            self._x = np.concatenate([self._x, np.zeros(max(need, 0))])
        # frame j reads samples j * hop - half .. j * hop - half + n_fft - 1
        while self._frame < frames and (final or self._frame * hop - half + self.n_fft <= end):
            j = self._frame
            a = j * hop - half - self._start  # frame j reads _x[a : a + n_fft]
            seg = self._x[a:a + self.n_fft] * self._win
            spec = np.fft.rfft(seg)
            have = np.log(np.maximum(self._basis @ np.abs(spec), self.recipe.log_floor))
            want = np.maximum(self._mel[j - (frames - self._mel.shape[0])], self._floor)
            gain = np.exp(self._spread.T @ np.clip(want - have, -self.limit, self.limit))
            y = np.fft.irfft(spec * gain, self.n_fft) * self._win
            lo, hi = max(a, 0), min(a + self.n_fft, self._acc.size)  # up to the utterance end
            self._acc[lo:hi] += y[lo - a:hi - a]
            self._norm[lo:hi] += self._win[lo - a:hi - a] ** 2
            self._frame += 1
        used = self._frame - (frames - self._mel.shape[0])
        self._mel = self._mel[used:]
        # complete: every frame whose window covers the sample is done (all of them at the end)
        done = end if final else min(end, self._frame * hop - half)
        n = done - self._emitted
        if n <= 0:
            return np.zeros(0, np.float32)
        i = self._emitted - self._start
        norm, x = self._norm[i:i + n], self._x[i:i + n]
        # where the windows barely cover a sample (an edge, or past the given mel) dividing by
        # their small sum would blow it up: blend toward the input instead (gain 1 -> input)
        out = (self._acc[i:i + n] + np.maximum(NORM_FLOOR - norm, 0.0) * x) / np.maximum(
            norm, NORM_FLOOR)
        self._emitted = done
        # keep what later frames still read: from the next frame's window start
        keep = min(self._frame * hop - half, self._emitted) - self._start
        if keep > 0:
            self._x, self._acc, self._norm = self._x[keep:], self._acc[keep:], self._norm[keep:]
            self._start += keep
        return np.clip(out, -1.0, 1.0).astype(np.float32)


def envelope_postfilter(audio: np.ndarray, mel: np.ndarray, recipe: MelRecipe,
                        **options: float) -> np.ndarray:
    """The envelope post-filter over a whole utterance: (frames * hop,) audio and its
    (frames, n_mels) log-mel -> float32 (frames * hop,). ``options``: ``max_gain_db``."""
    post = EnvelopePostfilter(recipe, **options)
    return np.concatenate([post(audio, mel), post.flush()])
