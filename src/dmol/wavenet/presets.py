"""WaveNet vocoder configurations: the model (:class:`WaveNetConfig`), the training run
(:class:`TrainConfig`), and named presets pairing the two.

Every preset name is also a mel recipe name in :data:`dmol.audio.features.MEL_RECIPES`, so
``recipe_for(preset)`` gives the features the model is conditioned on; the model's
``sample_rate``, ``n_mels`` and ``prod(upsample_scales)`` (= hop length) must match it.

Example::

    >>> model_cfg, train_cfg = get_preset("tiny")
    >>> model_cfg.hop_length, model_cfg.receptive_field
    (64, 29)
    >>> model_cfg, train_cfg = get_preset("tiny", overrides={"head": "mulaw", "max_steps": 10})
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from dmol.audio.pitch import F0_MAX, check_f0_max, check_ramp
from dmol.wavenet.heads import HEADS, LP_HEADS

__all__ = [
    "HEADS",
    "PRESETS",
    "TrainConfig",
    "WaveNetConfig",
    "apply_overrides",
    "get_preset",
]

LR_SCHEDULES = ("cosine", "exponential", "constant")
PRECISIONS = ("fp32", "bf16")


def _positive_int(obj: object, name: str) -> None:
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{type(obj).__name__}.{name} must be a positive integer, got {v!r}")


@dataclass
class WaveNetConfig:
    """Architecture of :class:`dmol.wavenet.model.WaveNet` and its output head.

    Layer ``i`` (0-based) has dilation ``2 ** (i % (layers // stacks))``. ``gate_channels`` is
    split in two halves (tanh and sigmoid), so the gated activation has ``gate_channels // 2``
    channels. ``num_classes=None`` means the head's default (65536 bins for "mol", "gaussian"
    and "mog", i.e. 16-bit targets; 256 classes for "mulaw").
    ``lpc_order > 0`` makes an LP-WaveNet: the network's input per step is the previous
    sample, the linear prediction ``p_t`` from the mel (:mod:`dmol.audio.lpc`) and the previous
    excitation ``x[t-1] - p[t-1]``, and the head's means are shifted by ``p_t``.
    ``preemphasis = alpha > 0``: the network models the emphasized signal
    ``(x[t] - alpha x[t-1]) / (1 + alpha)`` (its LPC from the same mel,
    :func:`dmol.audio.lpc.lpc_from_mel`) and synthesis de-emphasizes what it generates
    (:meth:`WaveNet.emphasize`, :meth:`WaveNet.deemphasize`).
    ``pitch_taps = K > 0`` (odd; LP models): the network also reads the K past samples around
    one pitch period back, ``x[t - T0 + j]``, ``|j| <= K // 2``, with the period ``T0`` of
    t's frame estimated from the mel (:mod:`dmol.audio.pitch`): a long-term predictor.
    ``pitch_excitation = True`` (with pitch taps) adds the K excitation samples there, the
    lagged signal's residual under t's own LPC (:func:`dmol.audio.pitch.pitch_excitation_taps`):
    the glottal pulses one period back, sharp where the signal taps are smeared by the formants.
    ``phase_harmonics = H > 0`` (LP models): every layer's conditioning also gets a phase
    clock, ``cos(2 pi k phi[t])`` and ``sin(2 pi k phi[t])`` for ``k <= H``: in synthesis
    ``phi`` integrates the mel's F0 estimate, in training it is the phase of the recording's
    own fundamental (:mod:`dmol.audio.phase`), so the pulses follow the clock.
    ``pitch_continuity = c > 0`` (with pitch taps or a clock): the mel's F0 estimate behind
    both is a causal track that pays ``c`` per octave it jumps between frames
    (:class:`dmol.audio.pitch.PitchTracker`) instead of each frame's best comb alone;
    ``pitch_continuity_ramp = (lo, hi)`` scales a frame's jump cost with its voicing strength,
    so that pauses and noise keep their per-frame (random) estimate.
    ``pitch_ceiling``: the highest F0 (Hz) the estimate searches (default 420); above it a
    voice is estimated an octave low, and taps and clock run at half its pitch.
    ``pitch_net = h > 0`` (with pitch taps or a clock): where a learned estimate
    (:class:`dmol.audio.pitch_net.MelPitchNet`, hidden width h, fitted to harvest's F0 of the
    training set when a run starts, or added to a bundle by ``dmol export --fit-pitch``) hears
    a pitch (its voicing probability above ``pitch_net_voicing``, default 0.5), taps and clock
    follow it instead of the comb's estimate.
    ``mel_mean``/``mel_std`` normalize the log-mel inside the model;
    :func:`dmol.wavenet.train.train` sets them from the training data for a new run, so a
    checkpoint carries them.
    """

    layers: int = 24
    stacks: int = 4
    residual_channels: int = 128
    gate_channels: int = 256
    skip_channels: int = 128
    kernel_size: int = 3
    upsample_scales: tuple[int, ...] = (4, 4, 4, 4)
    freq_axis_kernel_size: int = 3  # mel-axis width of each upsampling Conv2d
    cin_pad: int = 2  # the first conditioning conv sees 2 * cin_pad + 1 mel frames
    n_mels: int = 80
    sample_rate: int = 22050
    gin_channels: int = 0  # 0: no global (speaker) conditioning
    n_speakers: int = 0
    head: str = "mol"
    n_mixtures: int = 10
    num_classes: int | None = None
    log_scale_min: float = -16.0
    dropout: float = 0.0
    mel_mean: float = 0.0
    mel_std: float = 1.0
    lpc_order: int = 0  # > 0: LP-WaveNet (means shifted by the mel's linear prediction)
    preemphasis: float = 0.0  # > 0: model the emphasized signal (LPCNet uses 0.85)
    pitch_taps: int = 0  # > 0 (odd, LP only): inputs x[t - T0 + j], T0 the mel's pitch period
    pitch_excitation: bool = False  # with pitch taps: also their excitation (LP residual)
    phase_harmonics: int = 0  # > 0 (LP only): conditioning cos, sin(2 pi k phi), k <= H
    pitch_continuity: float = 0.0  # > 0: the F0 estimate is tracked (cost per octave jumped)
    # (lo, hi): the cost ramps with a frame's voicing strength (None: full in every frame)
    pitch_continuity_ramp: tuple[float, float] | None = None
    pitch_ceiling: float = F0_MAX  # Hz: the F0 estimate's ceiling (candidates above 420 Hz)
    pitch_net: int = 0  # > 0: a learned F0 estimate (hidden width) where it hears a pitch
    pitch_net_voicing: float = 0.5  # ... a pitch: its voicing probability above this

    def __post_init__(self) -> None:
        self.upsample_scales = tuple(int(s) for s in self.upsample_scales)
        for name in ("layers", "stacks", "residual_channels", "gate_channels", "skip_channels",
                     "kernel_size", "n_mels", "sample_rate", "n_mixtures", "freq_axis_kernel_size"):
            _positive_int(self, name)
        if self.layers % self.stacks:
            raise ValueError(f"layers ({self.layers}) must be a multiple of stacks ({self.stacks})")
        if self.gate_channels % 2:
            raise ValueError(f"gate_channels must be even (tanh|sigmoid halves), got "
                             f"{self.gate_channels}")
        if not self.upsample_scales or any(s <= 0 for s in self.upsample_scales):
            raise ValueError(f"upsample_scales must be positive integers, got "
                             f"{self.upsample_scales}")
        if self.freq_axis_kernel_size % 2 == 0:
            raise ValueError("freq_axis_kernel_size must be odd (same padding on the mel axis)")
        if self.cin_pad < 0 or self.gin_channels < 0 or self.n_speakers < 0:
            raise ValueError("cin_pad, gin_channels and n_speakers must be >= 0")
        if (self.gin_channels > 0) != (self.n_speakers > 0):
            raise ValueError(
                f"global conditioning needs both gin_channels and n_speakers > 0, got "
                f"gin_channels={self.gin_channels}, n_speakers={self.n_speakers}"
            )
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}: expected one of {HEADS}")
        if self.num_classes is not None and (
            isinstance(self.num_classes, bool) or int(self.num_classes) != self.num_classes
            or self.num_classes < 2
        ):
            raise ValueError(f"num_classes must be an integer >= 2 or None, "
                             f"got {self.num_classes!r}")
        if not (isinstance(self.log_scale_min, (int, float)) and math.isfinite(self.log_scale_min)):
            raise ValueError(f"log_scale_min must be a finite number, got {self.log_scale_min!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if isinstance(self.lpc_order, bool) or not isinstance(self.lpc_order, int) or not (
                0 <= self.lpc_order <= 64):
            raise ValueError(f"lpc_order must be an integer in [0, 64], got {self.lpc_order!r}")
        if self.lpc_order and self.head not in LP_HEADS:
            raise ValueError(f"lpc_order > 0 needs a continuous head {LP_HEADS} (the prediction "
                             f"shifts the means), got head {self.head!r}")
        if isinstance(self.preemphasis, bool) or not isinstance(self.preemphasis, (int, float)) \
                or not (math.isfinite(self.preemphasis) and 0.0 <= self.preemphasis < 1.0):
            raise ValueError(f"preemphasis must be a number in [0, 1), got {self.preemphasis!r}")
        if isinstance(self.pitch_taps, bool) or not isinstance(self.pitch_taps, int) or not (
                0 <= self.pitch_taps <= 15) or (self.pitch_taps and self.pitch_taps % 2 == 0):
            raise ValueError(f"pitch_taps must be 0 or an odd integer up to 15, got "
                             f"{self.pitch_taps!r}")
        if self.pitch_taps and not self.lpc_order:
            raise ValueError("pitch_taps > 0 needs an LP model (lpc_order > 0)")
        if not isinstance(self.pitch_excitation, bool):
            raise ValueError(f"pitch_excitation must be True or False, got "
                             f"{self.pitch_excitation!r}")
        if self.pitch_excitation and not self.pitch_taps:
            raise ValueError("pitch_excitation needs pitch taps (pitch_taps > 0)")
        if isinstance(self.phase_harmonics, bool) or not isinstance(self.phase_harmonics, int) \
                or not 0 <= self.phase_harmonics <= 16:
            raise ValueError(f"phase_harmonics must be an integer in [0, 16], got "
                             f"{self.phase_harmonics!r}")
        if self.phase_harmonics and not self.lpc_order:
            raise ValueError("phase_harmonics > 0 needs an LP model (lpc_order > 0)")
        if isinstance(self.pitch_continuity, bool) or not isinstance(
                self.pitch_continuity, (int, float)) or not (
                math.isfinite(self.pitch_continuity) and self.pitch_continuity >= 0):
            raise ValueError(f"pitch_continuity must be a number >= 0, got "
                             f"{self.pitch_continuity!r}")
        if self.pitch_continuity and not (self.pitch_taps or self.phase_harmonics):
            raise ValueError("pitch_continuity > 0 needs a pitch estimate to track "
                             "(pitch_taps > 0 or phase_harmonics > 0)")
        self.pitch_continuity_ramp = check_ramp(self.pitch_continuity_ramp)
        if self.pitch_continuity_ramp is not None and not self.pitch_continuity:
            raise ValueError("pitch_continuity_ramp needs a tracked estimate "
                             "(pitch_continuity > 0)")
        self.pitch_ceiling = check_f0_max(self.pitch_ceiling)
        if self.pitch_ceiling != F0_MAX and not (self.pitch_taps or self.phase_harmonics):
            raise ValueError("pitch_ceiling needs a pitch estimate (pitch_taps > 0 or "
                             "phase_harmonics > 0)")
        if isinstance(self.pitch_net, bool) or not isinstance(self.pitch_net, int) or not (
                0 <= self.pitch_net <= 4096):
            raise ValueError(f"pitch_net must be an integer in [0, 4096] (0: off), got "
                             f"{self.pitch_net!r}")
        v = self.pitch_net_voicing
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ValueError(f"pitch_net_voicing must be a probability in [0, 1), got {v!r}")
        self.pitch_net_voicing = float(v)
        if self.pitch_net and not (self.pitch_taps or self.phase_harmonics):
            raise ValueError("pitch_net > 0 needs a pitch estimate to refine (pitch_taps > 0 or "
                             "phase_harmonics > 0)")
        if not (math.isfinite(self.mel_std) and self.mel_std > 0 and math.isfinite(self.mel_mean)):
            raise ValueError(f"mel_std must be positive and finite, got mean {self.mel_mean!r}, "
                             f"std {self.mel_std!r}")

    @property
    def hop_length(self) -> int:
        """Audio samples per mel frame: the product of the upsampling scales."""
        return math.prod(self.upsample_scales)

    @property
    def dilations(self) -> list[int]:
        per_stack = self.layers // self.stacks
        return [2 ** (i % per_stack) for i in range(self.layers)]

    @property
    def receptive_field(self) -> int:
        """Past samples each prediction sees: ``(kernel_size - 1) * sum(dilations) + 1``.

        The output at t depends on x[t - receptive_field .. t - 1] (the input is shifted by one).
        """
        return (self.kernel_size - 1) * sum(self.dilations) + 1

    def head_kwargs(self) -> dict[str, Any]:
        """Arguments for :func:`dmol.wavenet.heads.make_head` (besides the name)."""
        return {"n_mixtures": self.n_mixtures, "num_classes": self.num_classes,
                "log_scale_min": self.log_scale_min, "shifted": self.lpc_order > 0}

    def recipe_mismatches(self, recipe) -> list[tuple[str, Any, Any]]:
        """``(field, recipe's value, model's value)`` for each of sample_rate, hop_length and
        n_mels where a mel recipe disagrees with this model: its features do not fit."""
        return [(k, getattr(recipe, k), getattr(self, k))
                for k in ("sample_rate", "hop_length", "n_mels")
                if getattr(recipe, k) != getattr(self, k)]

    @property
    def cond_channels(self) -> int:
        """Per-sample conditioning of every layer: the upsampled mel, then the phase clock's
        ``2 phase_harmonics`` channels."""
        return self.n_mels + 2 * self.phase_harmonics

    @property
    def in_channels(self) -> int:
        """Per-step network input: x[t-1]; with LP also p_t and the excitation x[t-1] - p[t-1],
        then the ``pitch_taps`` samples one pitch period back (and their excitation, with
        ``pitch_excitation``)."""
        if not self.lpc_order:
            return 1
        return 3 + self.pitch_taps * (1 + self.pitch_excitation)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["upsample_scales"] = list(self.upsample_scales)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WaveNetConfig:
        return cls(**_checked_fields(cls, d))


@dataclass
class TrainConfig:
    """A training run. ``segment_length`` (samples) is rounded down to whole mel frames.

    The learning rate warms up linearly over ``warmup_steps``, then follows ``lr_schedule``:
    ``"cosine"`` decays to ``lr * lr_min_ratio`` at ``lr_decay_steps`` (default: ``max_steps``)
    and stays there; ``"exponential"`` multiplies by ``lr_gamma`` every ``lr_decay_steps``
    (smoothly); ``"constant"`` keeps ``lr``. EMA weights use decay
    ``min(ema_decay, (1 + step) / (10 + step))`` so that they are useful early in a short run.
    """

    batch_size: int = 4
    segment_length: int = 8000
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 200
    lr_decay_steps: int | None = None
    lr_min_ratio: float = 0.05
    lr_gamma: float = 0.5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global grad norm; <= 0 disables clipping
    ema_decay: float = 0.9999
    max_steps: int = 100_000
    log_interval: int = 10
    ckpt_interval: int = 1000
    val_interval: int = 1000
    media_interval: int = 2000  # TensorBoard audio + distribution image
    keep_checkpoints: int = 3
    val_utterances: int = 8
    val_max_seconds: float = 2.0
    seed: int = 1234
    num_workers: int = 0
    input_noise: float = 0.0  # std of Gaussian noise added to the past the network sees
    # LP models: noise in the excitation at this fraction of its rms, through 1/A(z), added to
    # the past the network and the prediction read (dmol.audio.lpc.excitation_noise)
    lp_noise: float = 0.0
    # Parallel scheduled sampling (Duckworth et al. 2019): this fraction of each batch's
    # segments reads the model's own samples as its past instead of the truth; each of
    # ``self_sample_passes`` no-grad teacher-forced passes samples every step given the
    # previous pass's past, so pass k's past carries errors compounded k times. The target
    # stays the clean signal: the network learns to pull back from its own mistakes.
    self_sample: float = 0.0
    self_sample_passes: int = 1
    precision: str = "fp32"  # "bf16": autocast on CUDA (the loss itself runs in float32)

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        for name in ("batch_size", "segment_length", "max_steps", "log_interval", "ckpt_interval",
                     "val_interval", "media_interval", "keep_checkpoints", "val_utterances"):
            _positive_int(self, name)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}: expected {LR_SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: expected {PRECISIONS}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive and finite, got {self.lr!r}")
        if self.warmup_steps < 0 or self.num_workers < 0:
            raise ValueError("warmup_steps and num_workers must be >= 0")
        if self.lr_decay_steps is not None and self.lr_decay_steps <= 0:
            raise ValueError(f"lr_decay_steps must be positive or None, got {self.lr_decay_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay!r}")
        if not (math.isfinite(self.input_noise) and 0.0 <= self.input_noise < 1.0):
            raise ValueError(f"input_noise must lie in [0, 1), got {self.input_noise!r}")
        if not (math.isfinite(self.lp_noise) and 0.0 <= self.lp_noise <= 10.0):
            raise ValueError(f"lp_noise must lie in [0, 10], got {self.lp_noise!r}")
        if not (math.isfinite(self.self_sample) and 0.0 <= self.self_sample <= 1.0):
            raise ValueError(f"self_sample must lie in [0, 1], got {self.self_sample!r}")
        n = self.self_sample_passes
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 8:
            raise ValueError(f"self_sample_passes must be an integer in [1, 8], got "
                             f"{self.self_sample_passes!r}")
        if not (math.isfinite(self.val_max_seconds) and self.val_max_seconds > 0):
            raise ValueError(f"val_max_seconds must be positive and finite, got "
                             f"{self.val_max_seconds!r}")
        if not (math.isfinite(self.lr_min_ratio) and 0.0 <= self.lr_min_ratio <= 1.0):
            raise ValueError(f"lr_min_ratio must lie in [0, 1], got {self.lr_min_ratio!r}")
        if not (math.isfinite(self.lr_gamma) and 0.0 < self.lr_gamma <= 1.0):
            raise ValueError(f"lr_gamma must lie in (0, 1], got {self.lr_gamma!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0.0):
            raise ValueError(f"weight_decay must be finite and >= 0, got {self.weight_decay!r}")
        if not math.isfinite(self.grad_clip):  # <= 0 disables clipping; NaN/inf mean nothing
            raise ValueError(f"grad_clip must be finite (<= 0 disables it), got {self.grad_clip!r}")
        if len(self.betas) != 2 or not all(math.isfinite(b) and 0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**_checked_fields(cls, d))


def _checked_fields(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(names)}")
    return dict(d)


# The LP-WaveNet of the shipped model and its variants (below): small-16k's width, 14 layers.
_LP16K = WaveNetConfig(
    layers=14, stacks=2, residual_channels=32, gate_channels=64, skip_channels=32,
    kernel_size=3, upsample_scales=(4, 4, 4, 4), cin_pad=2, n_mels=80, sample_rate=16000,
    head="mol", n_mixtures=10, log_scale_min=-16.0, dropout=0.0, lpc_order=16,
)
_LP16K_TRAIN = TrainConfig(
    batch_size=4, segment_length=2048, lr=2e-3, lr_schedule="cosine", warmup_steps=100,
    grad_clip=1.0, ema_decay=0.999, max_steps=30_000, log_interval=20, ckpt_interval=500,
    val_interval=1000, media_interval=2000, val_utterances=4, val_max_seconds=1.0,
    input_noise=2e-4,
)

PRESETS: dict[str, tuple[WaveNetConfig, TrainConfig]] = {
    # r9y9/wavenet_vocoder's LJSpeech MoL recipe: 24 layers in 4 stacks, 10 logistics, 16-bit
    # targets, 4x4x4x4 upsampling (hop 256) with a 5-frame input conv (cin_pad=2).
    "r9y9-ljspeech-mol": (
        WaveNetConfig(
            layers=24, stacks=4, residual_channels=128, gate_channels=256, skip_channels=128,
            kernel_size=3, upsample_scales=(4, 4, 4, 4), cin_pad=2, n_mels=80, sample_rate=22050,
            head="mol", n_mixtures=10, num_classes=65536, log_scale_min=-16.0, dropout=0.05,
        ),
        TrainConfig(
            batch_size=8, segment_length=10240, lr=1e-3, lr_schedule="exponential",
            warmup_steps=1000, lr_decay_steps=200_000, lr_gamma=0.5, grad_clip=1.0,
            ema_decay=0.9999, max_steps=1_000_000, ckpt_interval=10_000, val_interval=10_000,
            media_interval=10_000, num_workers=2,
        ),
    ),
    # For 2 CPU cores and 10-20 minutes. Small batches of short segments: at a fixed number of
    # samples/s, more (noisier) updates learn faster early on than fewer large ones.
    "small-16k": (
        WaveNetConfig(
            layers=12, stacks=2, residual_channels=32, gate_channels=64, skip_channels=32,
            kernel_size=3, upsample_scales=(4, 4, 4, 4), cin_pad=2, n_mels=80, sample_rate=16000,
            head="mol", n_mixtures=10, log_scale_min=-16.0, dropout=0.0,
        ),
        TrainConfig(
            batch_size=2, segment_length=2048, lr=3e-3, lr_schedule="cosine", warmup_steps=50,
            grad_clip=1.0, ema_decay=0.999, max_steps=2000, log_interval=10, ckpt_interval=250,
            val_interval=250, media_interval=500, val_utterances=4, val_max_seconds=1.0,
        ),
    ),
    # LP-WaveNet for 2 CPU cores (the shipped model's recipe): small-16k's width, a receptive
    # field of two 64-sample dilation cycles (32 ms: two pitch periods down to ~60 Hz), the
    # mixture's means shifted by the order-16 prediction from the mel, noise in the past it
    # reads. Single long runs: cosine decay over max_steps, checkpoints every 500 steps.
    "lp-16k": (_LP16K, _LP16K_TRAIN),
    # lp-16k on the pre-emphasized signal (LPCNet's 0.85): the envelope the prediction fits is
    # flatter (1/A(z) at 0 Hz: median 32 -> 6 on the built-in prompts). For the ablation against
    # lp-16k (docs/quality.md).
    "lp-16k-pe": (dataclasses.replace(_LP16K, preemphasis=0.85), _LP16K_TRAIN),
    # lp-16k plus a long-term predictor: the 5 samples around one pitch period back, the
    # period estimated from the mel (dmol.audio.pitch). lp-16k learns the envelope fast but
    # pitch slowly (docs/quality.md); this hands it the periodicity.
    "lp-16k-ltp": (dataclasses.replace(_LP16K, pitch_taps=5), _LP16K_TRAIN),
    # lp-16k-ltp plus the taps' excitation (the LP residual one period back, where a glottal
    # pulse is sharp): the shipped model's network before its phase clock
    "lp-16k-ltpe": (dataclasses.replace(_LP16K, pitch_taps=5, pitch_excitation=True),
                    _LP16K_TRAIN),
    # lp-16k-ltpe plus a phase clock of 3 harmonics in every layer's conditioning (the
    # fundamental's phase: the recording's in training, the integrated F0 estimate in
    # synthesis): the shipped model's network (docs/pretrained.md)
    "lp-16k-ltpe-clock": (dataclasses.replace(_LP16K, pitch_taps=5, pitch_excitation=True,
                                              phase_harmonics=3), _LP16K_TRAIN),
    # lp-16k-ltpe-clock with the pitch estimate tracked across frames (0.8 per octave jumped):
    # the shipped model's network in sessions 13-16 (docs/quality.md)
    "lp-16k-ltpe-clock-tracked": (dataclasses.replace(_LP16K, pitch_taps=5, pitch_excitation=True,
                                                      phase_harmonics=3, pitch_continuity=0.8),
                                  _LP16K_TRAIN),
    # For tests and smoke runs: seconds per hundred steps.
    "tiny": (
        WaveNetConfig(
            layers=6, stacks=2, residual_channels=16, gate_channels=16, skip_channels=16,
            kernel_size=3, upsample_scales=(4, 4, 4), cin_pad=1, n_mels=20, sample_rate=16000,
            head="mol", n_mixtures=4, log_scale_min=-16.0, dropout=0.0,
        ),
        TrainConfig(
            batch_size=2, segment_length=1024, lr=3e-3, lr_schedule="cosine", warmup_steps=5,
            grad_clip=1.0, ema_decay=0.99, max_steps=200, log_interval=10, ckpt_interval=50,
            val_interval=50, media_interval=100, val_utterances=2, val_max_seconds=0.5,
        ),
    ),
}


def apply_overrides(
    model_cfg: WaveNetConfig, train_cfg: TrainConfig, overrides: dict[str, Any] | None
) -> tuple[WaveNetConfig, TrainConfig]:
    """Replace fields by name in whichever config owns them (the two share no field names).

    Unknown names raise a ValueError listing the valid ones.
    """
    overrides = dict(overrides or {})
    m_names = {f.name for f in dataclasses.fields(WaveNetConfig)}
    t_names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - m_names - t_names)
    if unknown:
        raise ValueError(
            f"unknown config field(s) {unknown}; model fields: {sorted(m_names)}; "
            f"training fields: {sorted(t_names)}"
        )
    m = {k: v for k, v in overrides.items() if k in m_names}
    t = {k: v for k, v in overrides.items() if k in t_names}
    return dataclasses.replace(model_cfg, **m), dataclasses.replace(train_cfg, **t)


def get_preset(
    name: str, overrides: dict[str, Any] | None = None
) -> tuple[WaveNetConfig, TrainConfig]:
    """Fresh copies of preset ``name``'s configs, with ``overrides`` applied by field name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: known presets are {sorted(PRESETS)}")
    m, t = PRESETS[name]
    return apply_overrides(dataclasses.replace(m), dataclasses.replace(t), overrides)

