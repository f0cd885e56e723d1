"""WaveNet vocoder: dilated causal convolutions conditioned on log-mel frames.

Structure (all convolutions are ``nn.Conv1d`` over time; ``R``/``G``/``S`` are the residual,
gate and skip channel counts, ``C`` the head's output channels)::

    x_in = [0, x[0], ..., x[T-2]]                 previous sample, 1 scalar channel  (B, 1, T)
         (LP, lpc_order > 0: 3 channels [x[t-1], p[t], x[t-1] - p[t-1]], p the linear
          prediction of x[t] from x[t-order..t-1] with the mel's LPC, dmol.audio.lpc;
          pitch_taps K > 0: K more, x[t - T0 + j] for |j| <= K // 2, T0 the pitch period of
          t's frame from the mel, dmol.audio.pitch; pitch_excitation: K more, their LP
          residual under t's coefficients)
    c    = upsample(mel)                          (B, n_mels, T), T = frames * hop
         (phase_harmonics H > 0: 2 H more, cos and sin of 2 pi k phi[t], k = 1 .. H, phi the
          phase clock, dmol.audio.phase)
    h    = first(x_in)                            1x1 conv, in_channels -> R
    for layer i = 0 .. L-1, dilation d_i = 2 ** (i % (L / stacks)):
        z     = conv_i(left_pad(h, (k - 1) d_i))  dilated causal conv, R -> G
              + cond_i(c) [+ gcond_i(g)]          1x1 projections, no bias
        a, b  = z[:, :G/2], z[:, G/2:]
        u     = tanh(a) * sigmoid(b)              gated unit, G/2 channels
        skip += skip_i(u)                         1x1, G/2 -> S
        h     = (h + out_i(u)) * sqrt(0.5)        1x1, G/2 -> R (not in the last layer: unused)
    y_hat = post(skip * sqrt(1 / L))              relu, 1x1 S -> S, relu, 1x1 S -> C
          (LP: p appended as the last channel: the head shifts every mean by it)

The output at time t depends on x[t - receptive_field .. t - 1] and on the whole mel (the
upsampling network looks a few frames both ways). Incremental synthesis only needs, per layer,
the last ``(k - 1) * d_i`` inputs of ``conv_i``: its tap ``j`` (``conv_i.weight[:, :, j]``)
multiplies ``h[t - (k - 1 - j) * d_i]``.

Example::

    >>> from dmol.wavenet.presets import get_preset
    >>> model = WaveNet(get_preset("tiny")[0])
    >>> mel = torch.randn(2, 20, 10)                   # (B, n_mels, frames)
    >>> x = torch.rand(2, 640) * 2 - 1                 # (B, frames * hop)
    >>> model(x, mel).shape                            # (B, head.out_channels, T)
    torch.Size([2, 12, 640])
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from dmol.audio.features import MelRecipe, recipe_for
from dmol.audio.lpc import de_emphasis, lp_predict, lpc_from_mel, pre_emphasis
from dmol.audio.phase import analysis_phase, clock_phase, phase_features
from dmol.audio.pitch import F0_MIN, pitch_excitation_taps, pitch_from_mel, pitch_lags, pitch_taps
from dmol.audio.pitch_net import MelPitchNet
from dmol.wavenet.heads import Head, make_head
from dmol.wavenet.presets import PRESETS, WaveNetConfig, get_preset

__all__ = ["ReceptiveField", "ResidualLayer", "UpsampleNetwork", "WaveNet", "presets_table"]


class ReceptiveField(NamedTuple):
    samples: int
    ms: float


class UpsampleNetwork(nn.Module):
    """Log-mel frames (B, n_mels, frames) -> conditioning features (B, n_mels, frames * hop).

    An optional ``conv_in`` (kernel ``2 * cin_pad + 1`` frames, edge frames replicated) gives
    each frame some context; then, per scale s, the time axis is stretched s times (nearest)
    and smoothed by a ``Conv2d`` of kernel ``(freq_kernel, 2 s + 1)`` over (mel, time). The
    smoothing convs start as box filters, so an untrained network interpolates.
    """

    def __init__(self, n_mels: int, scales: tuple[int, ...], cin_pad: int = 2,
                 freq_kernel: int = 3) -> None:
        super().__init__()
        self.scales, self.cin_pad = tuple(scales), cin_pad
        self.conv_in = nn.Conv1d(n_mels, n_mels, 2 * cin_pad + 1, bias=False) if cin_pad else None
        self.stretch = nn.ModuleList()
        for s in self.scales:
            conv = nn.Conv2d(1, 1, (freq_kernel, 2 * s + 1), padding=(freq_kernel // 2, s),
                             bias=False)
            nn.init.constant_(conv.weight, 1.0 / conv.weight.numel())
            self.stretch.append(conv)

    def forward(self, mel: Tensor) -> Tensor:
        c = mel
        if self.conv_in is not None:
            c = self.conv_in(F.pad(c, (self.cin_pad, self.cin_pad), mode="replicate"))
        h = c.unsqueeze(1)  # (B, 1, n_mels, frames): Conv2d treats (mel, time) as an image
        for s, conv in zip(self.scales, self.stretch, strict=True):
            h = conv(h.repeat_interleave(s, dim=-1))
        return h.squeeze(1)


class ResidualLayer(nn.Module):
    """One gated residual block; returns (residual output, skip contribution)."""

    def __init__(self, residual: int, gate: int, skip: int, kernel_size: int, dilation: int,
                 cin: int, gin: int = 0, dropout: float = 0.0, residual_out: bool = True) -> None:
        super().__init__()
        self.dilation, self.kernel_size, self.dropout = dilation, kernel_size, dropout
        self.padding = (kernel_size - 1) * dilation  # left padding only: causal
        self.conv = nn.Conv1d(residual, gate, kernel_size, dilation=dilation)
        self.cond = nn.Conv1d(cin, gate, 1, bias=False)
        self.gcond = nn.Conv1d(gin, gate, 1, bias=False) if gin else None
        # the last layer's residual output would feed nothing (and leave DDP unused parameters)
        self.out = nn.Conv1d(gate // 2, residual, 1) if residual_out else None
        self.skip = nn.Conv1d(gate // 2, skip, 1)

    def gate(self, z: Tensor) -> Tensor:
        """Pre-activation (B, G, T) -> gated unit (B, G/2, T)."""
        a, b = z.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, h: Tensor, c: Tensor, g: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = F.dropout(h, self.dropout, self.training)
        z = self.conv(F.pad(z, (self.padding, 0))) + self.cond(c)
        if self.gcond is not None and g is not None:
            z = z + self.gcond(g)  # g is (B, gin, 1): broadcast over time
        u = self.gate(z)
        if self.out is None:
            return h, self.skip(u)
        return (h + self.out(u)) * math.sqrt(0.5), self.skip(u)


class WaveNet(nn.Module):
    """The vocoder network; see the module docstring for the exact structure.

    Args:
        cfg: a :class:`~dmol.wavenet.presets.WaveNetConfig`.
        recipe: the :class:`~dmol.audio.features.MelRecipe` of the conditioning; required for
            an LP model (``cfg.lpc_order > 0``), which computes its prediction from the mel.

    Attributes:
        head: the output :class:`~dmol.wavenet.heads.Head` (loss, sampling, distribution).
    """

    def __init__(self, cfg: WaveNetConfig, recipe: MelRecipe | None = None) -> None:
        super().__init__()
        if not isinstance(cfg, WaveNetConfig):
            raise TypeError(f"WaveNet expects a WaveNetConfig, got {type(cfg).__name__}")
        if cfg.lpc_order:
            if not isinstance(recipe, MelRecipe):
                raise ValueError("an LP WaveNet (lpc_order > 0) computes its prediction from the "
                                 "mel: pass the MelRecipe, WaveNet(cfg, recipe)")
            if (recipe.n_mels, recipe.hop_length) != (cfg.n_mels, cfg.hop_length):
                raise ValueError(f"recipe (n_mels {recipe.n_mels}, hop {recipe.hop_length}) "
                                 f"does not fit the model ({cfg.n_mels}, {cfg.hop_length})")
        if cfg.pitch_taps or cfg.phase_harmonics:  # the recipe must resolve harmonics (raises
            pitch_from_mel(torch.zeros(1, cfg.n_mels), recipe)  # a one-line error if not)
        self.cfg, self.recipe = cfg, recipe
        self.head: Head = make_head(cfg.head, **cfg.head_kwargs())
        R, G, S = cfg.residual_channels, cfg.gate_channels, cfg.skip_channels
        self.first = nn.Conv1d(cfg.in_channels, R, 1)
        self.upsample_net = UpsampleNetwork(cfg.n_mels, cfg.upsample_scales, cfg.cin_pad,
                                            cfg.freq_axis_kernel_size)
        self.embed_speakers = (
            nn.Embedding(cfg.n_speakers, cfg.gin_channels) if cfg.gin_channels else None
        )
        self.layers = nn.ModuleList(
            ResidualLayer(R, G, S, cfg.kernel_size, d, cfg.cond_channels, cfg.gin_channels,
                          cfg.dropout,
                          residual_out=i < cfg.layers - 1)
            for i, d in enumerate(cfg.dilations)
        )
        # ReLU, 1x1, ReLU, 1x1 (the state_dict keys post.1 and post.3 are the checkpoint format)
        self.post = nn.Sequential(
            nn.ReLU(), nn.Conv1d(S, S, 1), nn.ReLU(), nn.Conv1d(S, self.head.net_channels, 1)
        )
        self.head.init_output(self.post_convs[1])  # e.g. start the scales at a sensible width
        # the learned F0 estimate: fitted, not trained with the network (frozen); made with
        # its own random numbers so the network's initial weights do not depend on it
        self.pitch_net: MelPitchNet | None = None
        if cfg.pitch_net:
            with torch.random.fork_rng():
                self.pitch_net = MelPitchNet(cfg.n_mels, cfg.pitch_net).requires_grad_(False)
        # constants from the config (which checkpoints carry), kept out of the state_dict
        self.register_buffer("mel_mean", torch.tensor(float(cfg.mel_mean)), persistent=False)
        self.register_buffer("mel_std", torch.tensor(float(cfg.mel_std)), persistent=False)

    # ---- properties ---------------------------------------------------------------------
    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    @property
    def receptive_field(self) -> ReceptiveField:
        """Past samples each output sees, and the same in milliseconds at ``cfg.sample_rate``."""
        n = self.cfg.receptive_field
        return ReceptiveField(n, 1000.0 * n / self.cfg.sample_rate)

    @property
    def post_convs(self) -> tuple[nn.Conv1d, nn.Conv1d]:
        """The post-net's two 1x1 convs: skip sum -> hidden, hidden -> head parameters."""
        return self.post[1], self.post[3]

    @property
    def num_parameters(self) -> int:
        """The network's parameters (a learned F0 estimate's are fitted apart, not counted)."""
        net = self.pitch_net
        return sum(p.numel() for p in self.parameters()) - (
            0 if net is None else sum(p.numel() for p in net.parameters()))

    # ---- checks -------------------------------------------------------------------------
    def _check_mel(self, mel: Tensor) -> None:
        if not isinstance(mel, Tensor):
            raise TypeError(f"mel must be a torch.Tensor, got {type(mel).__name__}")
        if not mel.is_floating_point():
            raise TypeError(f"mel must be floating point, got dtype {mel.dtype}")
        if mel.dim() != 3 or mel.shape[1] != self.cfg.n_mels:
            hint = ""
            if mel.dim() == 3 and mel.shape[2] == self.cfg.n_mels:
                hint = " (transposed? expected (B, n_mels, frames))"
            raise ValueError(
                f"mel must have shape (B, n_mels={self.cfg.n_mels}, frames), "
                f"got {tuple(mel.shape)}{hint}"
            )
        if mel.shape[2] == 0:
            raise ValueError("mel has 0 frames")

    def _global(self, speaker: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
        if self.embed_speakers is None:
            if speaker is not None:
                raise ValueError("speaker ids given, but the model has no global conditioning "
                                 "(n_speakers = 0)")
            return None
        if speaker is None:
            raise ValueError(f"this model is conditioned on {self.cfg.n_speakers} speakers: "
                             f"pass speaker ids of shape (B,)")
        speaker = torch.as_tensor(speaker, device=device)
        if speaker.dtype.is_floating_point or speaker.shape != (batch,):
            raise ValueError(f"speaker must be integer ids of shape ({batch},), got "
                             f"{tuple(speaker.shape)} {speaker.dtype}")
        lo, hi = int(speaker.min()), int(speaker.max())
        if lo < 0 or hi >= self.cfg.n_speakers:
            raise ValueError(f"speaker ids must lie in [0, {self.cfg.n_speakers - 1}], got "
                             f"min {lo}, max {hi}")
        return self.embed_speakers(speaker.long()).unsqueeze(-1)  # (B, gin, 1)

    # ---- forward ------------------------------------------------------------------------
    def upsample(self, mel: Tensor) -> Tensor:
        """Normalized, upsampled conditioning: (B, n_mels, frames) -> (B, n_mels, frames * hop)."""
        self._check_mel(mel)
        return self.upsample_net((mel - self.mel_mean) / self.mel_std)

    def lpc(self, mel: Tensor) -> Tensor:
        """LPC coefficients of each mel frame: (B, n_mels, frames) -> (B, frames, lpc_order)."""
        if not self.cfg.lpc_order:
            raise ValueError("this model has no linear prediction (lpc_order = 0)")
        self._check_mel(mel)
        return lpc_from_mel(mel.transpose(1, 2), self.recipe, self.cfg.lpc_order,
                            preemphasis=self.cfg.preemphasis).to(mel.device)

    def pitch_lags(self, mel: Tensor) -> Tensor:
        """Pitch period of each mel frame in samples: (B, n_mels, frames) -> (B, frames) int64."""
        if not self.cfg.pitch_taps:
            raise ValueError("this model has no pitch taps (pitch_taps = 0)")
        return pitch_lags(self.f0(mel), self.cfg.sample_rate,
                          self.cfg.pitch_ceiling).to(mel.device)

    def f0(self, mel: Tensor) -> Tensor:
        """The mel's F0 estimate of each frame in Hz: (B, n_mels, frames) -> (B, frames);
        tracked from the first frame given when ``cfg.pitch_continuity > 0``, and the learned
        estimate where it hears a pitch with ``cfg.pitch_net`` (:meth:`refine_f0`)."""
        self._check_mel(mel)
        frames = mel.transpose(1, 2)
        f0, _ = pitch_from_mel(frames, self.recipe, self.cfg.pitch_continuity,
                               self.cfg.pitch_continuity_ramp, self.cfg.pitch_ceiling)
        return self.refine_f0(f0, frames).to(mel.device)

    def refine_f0(self, f0: Tensor, frames: Tensor) -> Tensor:
        """The comb's F0 (..., F) with the learned estimate of the log-mel ``frames`` (..., F,
        n_mels) put in where it hears a pitch (p_voiced > ``cfg.pitch_net_voicing``), clamped
        to the comb's range; ``f0`` itself without ``cfg.pitch_net``. Elsewhere the comb's
        estimate stays: the one the network was trained with in pauses and noise. Frame by
        frame: a stream gets the same numbers as the whole."""
        if self.pitch_net is None:
            return f0
        g, p_voiced = self.pitch_net.estimate(frames.to(self.pitch_net.mean.device))
        g = g.clamp(F0_MIN, self.cfg.pitch_ceiling).to(f0)
        return torch.where(p_voiced.to(f0.device) > self.cfg.pitch_net_voicing, g, f0)

    def clock_phase(self, mel: Tensor) -> Tensor:
        """Synthesis's phase clock (B, frames * hop) in cycles: the integrated F0 estimate."""
        return clock_phase(self.f0(mel), self.hop_length, self.cfg.sample_rate)

    def analysis_phase(self, x: Tensor, mel: Tensor) -> Tensor:
        """Training's phase (B, T) in cycles: the fundamental of the signal ``x`` (B, T) itself,
        found near the clock of the mel's estimate (:func:`dmol.audio.phase.analysis_phase`)."""
        return analysis_phase(x, self.f0(mel), self.hop_length, self.cfg.sample_rate)

    def conditioning(self, mel: Tensor, phase: Tensor | None = None) -> Tensor:
        """Every layer's conditioning (B, cond_channels, T): :meth:`upsample` of the mel, then
        with ``phase_harmonics`` the clock's features of ``phase`` (B, T) cycles (default: the
        synthesis clock, :meth:`clock_phase`)."""
        c = self.upsample(mel)
        H = self.cfg.phase_harmonics
        if not H:
            if phase is not None:
                raise ValueError("phase= given, but the model has no phase clock "
                                 "(phase_harmonics = 0)")
            return c
        if phase is None:
            phase = self.clock_phase(mel)
        elif tuple(phase.shape) != (c.shape[0], c.shape[2]):
            raise ValueError(f"phase must be (B, T) = {(c.shape[0], c.shape[2])}, got "
                             f"{tuple(phase.shape)}")
        return torch.cat([c, phase_features(phase, H).to(c)], dim=1)

    def emphasize(self, audio: Tensor) -> Tensor:
        """Audio (..., T) -> the signal the model works on (``cfg.preemphasis``; identity at 0).

        Training reads and predicts ``emphasize(x)``; synthesis generates that signal and
        :meth:`deemphasize` turns it back into audio. Samples before the start count as 0.
        """
        return pre_emphasis(audio, self.cfg.preemphasis)

    def deemphasize(self, signal: Tensor, prev: Tensor | None = None) -> Tensor:
        """The inverse of :meth:`emphasize`; ``prev`` is the audio sample before ``signal``
        (the last of a previous piece of a stream; default 0)."""
        return de_emphasis(signal, self.cfg.preemphasis, prev)

    def forward(self, x: Tensor, mel: Tensor, speaker: Tensor | None = None, *,
                past: Tensor | None = None, phase: Tensor | None = None) -> Tensor:
        """Teacher-forced pass: ``y_hat[:, :, t]`` parameterizes p(x[t] | x[<t], mel, speaker).

        Args:
            x: (B, T) waveform in [-1, 1], T = frames * hop_length; a model with
                ``cfg.preemphasis`` reads and predicts :meth:`emphasize` of the audio.
            mel: (B, n_mels, frames) log-mel.
            speaker: (B,) integer ids if the model has global conditioning.
            past: (B, T) the signal the network and the prediction read as the past (default
                ``x``); training passes a noisy copy so the model learns to predict the clean
                sample from an imperfect past, as in synthesis from its own samples.
            phase: (B, T) cycles, models with a phase clock only: the clock's phase (default:
                the synthesis clock of the mel; training passes :meth:`analysis_phase`).

        Returns:
            y_hat: (B, head.out_channels, T); for an LP model the last channel is the
            prediction p_t that shifts the head's means.
        """
        if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a floating point tensor (B, T), got {got}")
        self._check_mel(mel)
        B, T = x.shape
        if mel.shape[0] != B:
            raise ValueError(f"batch sizes differ: x has {B}, mel has {mel.shape[0]}")
        if T != mel.shape[2] * self.hop_length:
            raise ValueError(
                f"x has {T} samples but mel has {mel.shape[2]} frames: expected T = frames * "
                f"hop_length = {mel.shape[2] * self.hop_length}"
            )
        if past is None:
            past = x
        elif past.shape != x.shape:
            raise ValueError(f"past must have x's shape {tuple(x.shape)}, got {tuple(past.shape)}")
        g = self._global(speaker, B, x.device)
        c = self.conditioning(mel, phase)

        def shift(s: Tensor) -> Tensor:  # s[t - 1], 0 at t = 0: step t never sees x[t]
            return F.pad(s[:, :-1], (1, 0))

        if not self.cfg.lpc_order:
            return self.forward_features(shift(past).unsqueeze(1), c, g)
        with torch.no_grad():
            a = self.lpc(mel)
            p = lp_predict(past, a, self.hop_length)
        x_in = torch.stack([shift(past), p, shift(past - p)], dim=1)
        if self.cfg.pitch_taps:
            K, lags = self.cfg.pitch_taps, self.pitch_lags(mel)
            x_in = torch.cat([x_in, pitch_taps(past, lags, self.hop_length, K)], dim=1)
            if self.cfg.pitch_excitation:
                ex = pitch_excitation_taps(past, lags, a, self.hop_length, K)
                x_in = torch.cat([x_in, ex], dim=1)
        return torch.cat([self.forward_features(x_in, c, g), p.unsqueeze(1)], dim=1)

    def forward_features(self, x_in: Tensor, c: Tensor, g: Tensor | None = None) -> Tensor:
        """The stack on already-shifted input (B, in_channels, T) and the conditioning
        (B, cond_channels, T) (:meth:`conditioning`); returns the network's output
        (B, head.net_channels, T)."""
        h = self.first(x_in)
        skips = 0
        for layer in self.layers:
            h, s = layer(h, c, g)
            skips = skips + s
        # sum of L skips has ~L times the variance of one; rescale (as r9y9 does)
        return self.post(skips * math.sqrt(1.0 / len(self.layers)))

    def extra_repr(self) -> str:
        rf = self.receptive_field
        return (f"head={self.head!r}, receptive_field={rf.samples} samples "
                f"({rf.ms:.1f} ms), parameters={self.num_parameters:,}")


def presets_table() -> str:
    """Markdown table of every preset: shape, head, receptive field, parameter count.

    ``docs/wavenet.md`` embeds this output (a test keeps the two in sync).
    """
    lines = [
        "| preset | rate (Hz) | hop | layers / stacks | residual / gate / skip | kernel "
        "| head | receptive field | parameters |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in PRESETS:
        m, t = get_preset(name)
        model = WaveNet(m, recipe_for(name))
        rf = model.receptive_field
        ramp = m.pitch_continuity_ramp
        lines.append(
            f"| `{name}` | {m.sample_rate} | {m.hop_length} "
            f"({'x'.join(map(str, m.upsample_scales))}) | {m.layers} / {m.stacks} "
            f"| {m.residual_channels} / {m.gate_channels} / {m.skip_channels} | {m.kernel_size} "
            f"| {m.head}{f' + LPC {m.lpc_order}' if m.lpc_order else ''}"
            f"{f' + pre-emphasis {m.preemphasis:g}' if m.preemphasis else ''}"
            f"{f' + pitch taps {m.pitch_taps}' if m.pitch_taps else ''}"
            f"{' and their excitation' if m.pitch_excitation else ''}"
            f"{f' + phase clock {m.phase_harmonics}' if m.phase_harmonics else ''}"
            f"{f', pitch tracked {m.pitch_continuity:g}' if m.pitch_continuity else ''}"
            f"{f' (ramp {ramp[0]:g}..{ramp[1]:g})' if ramp else ''}, "
            f"{model.head.net_channels} ch | {rf.samples} samples = {rf.ms:.1f} ms "
            f"| {model.num_parameters:,} |"
        )
    return "\n".join(lines)
