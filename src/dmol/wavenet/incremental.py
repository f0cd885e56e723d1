"""Sample-by-sample WaveNet inference with preallocated state: the engine behind synthesis.

A trained :class:`~dmol.wavenet.model.WaveNet` is re-laid out once (in float64, then cast) so
that one time step costs a handful of matrix products and no allocation of state:

* **Ring buffers.** Layer ``i`` reads its input ``h_i`` at times ``t - (k-1-j) d_i``. All
  layers share one preallocated ring ``(L, P, B, R)`` with ``P = k * lcm(dilations)``; time
  ``t`` lives in slot ``t % P``. Nothing is concatenated or shifted per step.
* **One matrix product per layer.** The ``k`` taps of ``conv_i`` are stacked into one
  ``(k R, G)`` matrix; the ``k`` ring rows are gathered and multiplied at once.
* **Amortised past taps** (``amortize=True``, layers with ``d_i >= 2``). The taps on
  ``h(t - d_i)``, ``h(t - 2 d_i)`` of the next ``d_i`` steps only use values that already
  exist at a multiple of ``d_i``, so they are computed for ``d_i`` steps in one matrix-matrix
  product and added to the precomputed conditioning; per step only the current tap is left.
  Same arithmetic, about a third less weight traffic per step, which is what bounds batch-1
  speed on a CPU.
* **Folded constants.** ``first``'s and every ``out``'s bias become a known offset of the
  residual stream, moved into the conv biases (the ring starts at minus that offset, so the
  zero padding of the real network is reproduced exactly). ``sqrt(0.5)`` and ``sqrt(1/L)``
  go into the weights, the tanh half of the gate is computed as ``2 sigmoid(2a) - 1`` so one
  ``sigmoid`` covers the whole gate, and the ``skip`` 1x1s of all layers are one matrix
  product per step over the stacked gate outputs.
* **Conditioning up front.** Each layer's ``cond`` (and speaker) projection plus biases is one
  matrix product per call of :meth:`IncrementalWaveNet.run`, ``(T, cin) @ (cin, L G)``.
* **Fused sampling.** For the MoL head the noise of a chunk is drawn up front (Gumbel noise
  already multiplied by the temperature, logistic noise ``log u - log(1 - u)``) and the step
  picks the component and the value in a few ops; other heads call ``head.sample`` per step.
  The logistic noise is pre-multiplied by the scale temperature (``mu + s (st l)``).
* **Linear prediction** (LP-WaveNet, ``cfg.lpc_order > 0``). The step predicts its sample
  from the stream's own last ``order`` samples, ``p_t = -sum_k a_k x[t-k]``, with per-sample
  coefficients (:func:`lpc_per_sample` of ``model.lpc(mel)``, the ``lpc=`` argument of
  :meth:`IncrementalWaveNet.run`); the first layer reads ``[x[t-1], p_t, x[t-1] - p[t-1]]``
  and every component mean is shifted by ``p_t``. The last ``order`` samples and the previous
  prediction live in :class:`IncrementalState`, so successive calls continue seamlessly.
  With ``cfg.pitch_taps = K`` the first layer also reads ``x[t - lag_t + j]``, ``|j| <= K // 2``,
  ``lag_t`` the pitch period of the step's frame (``model.pitch_lags(mel)`` per sample, the
  ``lags=`` argument), and with ``cfg.pitch_excitation`` their residual under the step's
  coefficients; the state then keeps the last :attr:`IncrementalWaveNet.history` samples,
  enough for the longest period (and the ``order`` samples before it).

Three backends run the same step: ``"torch"`` (eager PyTorch ops, the exact reference, any
device), ``"compile"`` (the step through :func:`torch.compile`) and ``"cpp"`` (CPU, MoL head,
LP or not: the projection and the whole loop over a call's steps in a small C++ kernel,
``dmol/csrc/wavenet_step.cpp``, built once with the system compiler and loaded with :mod:`ctypes`;
AVX-512, AVX2 + FMA and portable code paths).
Batch-1 generation is bound by reading every weight once per step; the kernel keeps each
matrix as contiguous 32-column panels and streams them at memory speed, where a BLAS
matrix-vector product and Inductor's reductions reach a fraction of it (docs/synthesis.md).
Weights may be stored in bfloat16 (``dtype=``); the state and every sum stay float32. The
``"cpp"`` backend also takes int8 weights (one scale per output column), whose products round
each input row to 8 bits (one scale per row) and sum exactly in int32: with AVX512-VNNI four
times the arithmetic of float32 and a quarter of the bytes. The state lives on the model's
device.

Example::

    >>> engine = IncrementalWaveNet(model, backend="cpp")   # model: a WaveNet in eval mode
    >>> state = engine.new_state(batch=1)
    >>> c = model.conditioning(mel)                          # (1, cond_channels, T)
    >>> x = engine.run(state, c, noise=engine.draw_noise(T, 1, generator=g))   # (1, T)
    >>> # an LP model also needs each step's coefficients
    >>> lpc = lpc_per_sample(model.lpc(mel), 0, T, model.hop_length, mel.shape[-1])
    >>> x = engine.run(state, c, lpc=lpc, generator=g, scale_temperature=0.8)
"""

from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from dmol import _native
from dmol.audio.pitch import F0_MIN
from dmol.wavenet.model import WaveNet

__all__ = ["BACKENDS", "IncrementalState", "IncrementalWaveNet", "MoLNoise", "cpp_available",
           "cpp_problem",
           "lpc_per_sample", "sample_mol"]

BACKENDS = ("torch", "compile", "cpp")
WEIGHT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.int8)


@dataclass
class MoLNoise:
    """Pre-drawn noise for ``T`` steps of ``B`` streams of a MoL head.

    ``gumbel`` (T, B, M) is Gumbel noise times the temperature (``argmax(logits / tau + g)
    == argmax(logits + tau g)``, and ``tau = 0`` gives the most probable component), and
    ``logistic`` (T, B) is ``log u - log(1 - u)``, the logistic inverse CDF of a uniform, times
    the scale temperature (``mu + s (st l)`` draws from the component with its scale times st;
    0: the component's mean).
    """

    gumbel: Tensor
    logistic: Tensor


def _check_temperature(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def lpc_per_sample(a: Tensor, start: int, stop: int, hop: int, total: int | None = None,
                   first: int = 0) -> Tensor:
    """The LP coefficients of samples ``start .. stop - 1``: (B, stop - start, order).

    ``a`` (B, n, order) holds the coefficients of frames ``first .. first + n - 1``
    (``model.lpc(mel)``); sample t uses frame ``min((t + hop // 2) // hop, total - 1)``, the
    frame whose centre is nearest (as :func:`dmol.audio.lpc.lp_predict`). ``total``: the
    utterance's frame count when its end is known (else the frames must be in ``a``).
    """
    t = torch.arange(start, stop, device=a.device)
    f = (t + hop // 2) // hop
    if total is not None:
        f = f.clamp(max=total - 1)
    f = f - first
    if len(f) and (int(f.min()) < 0 or int(f.max()) >= a.shape[1]):
        raise ValueError(f"samples {start}..{stop - 1} need coefficient frames "
                         f"{int(f.min()) + first}..{int(f.max()) + first}, have {first}.."
                         f"{first + a.shape[1] - 1}")
    return a[:, f]


# Why an LP model's stream is not clipped inside the loop. The stream is ``x_t = p_t + e_t``
# with ``p_t`` a linear prediction from the stream's own past: a linear loop, stable for any
# bounded excitation because ``A(z)`` is minimum phase. Clipping ``x_t`` to [-1, 1] inside it
# makes it nonlinear, and where the predictor's gain exceeds 1 at some frequency (it does, far
# from the formants) a saturated limit cycle can lock in: a full-scale square wave at a
# frequency the mel does not have (measured on pure tones: `beep` locks to ~1 kHz instead of
# its 700 Hz). So the engines clip the excitation drawn from the head (its own range) and add
# ``p_t`` after the clip; the audio is clipped to [-1, 1] on the way out, after de-emphasis.


def sample_mol(y: Tensor, gumbel: Tensor, logistic: Tensor, log_scale_min: float,
               loc: Tensor | None = None) -> Tensor:
    """One draw per row from MoL parameters ``y`` (B, 3M) given :class:`MoLNoise` rows.

    The same draw as :func:`dmol.logistic.sample_discretized_mix_logistic`: the Gumbel-max
    component, then the logistic inverse CDF at the pre-drawn uniform, clipped to [-1, 1].
    ``loc`` (B,): an LP-WaveNet's prediction p_t, added *after* the clip: the excitation
    ``clamp(mu_k + s_k l, -1, 1)`` plus ``loc`` (see the comment above).
    """
    M = y.shape[1] // 3
    idx = (y[:, :M] + gumbel).argmax(-1, keepdim=True)
    mu = y[:, M:2 * M].gather(1, idx)[:, 0]
    log_s = y[:, 2 * M:].gather(1, idx)[:, 0].clamp(min=log_scale_min)
    x = (mu + torch.exp(log_s) * logistic).clamp(-1.0, 1.0)
    return x if loc is None else x + loc


@dataclass
class IncrementalState:
    """Everything that changes from step to step, for ``batch`` parallel streams.

    ``ring`` (L, P, B, R) holds each layer's (offset) input for the last ``P`` steps,
    ``x`` (B,) the previous sample, ``t`` the number of steps taken. An LP model also keeps
    ``hist`` (B, history), the last ``history`` (>= order) samples in time order
    (``hist[:, -1] == x``; :attr:`IncrementalWaveNet.history`), and
    ``p`` (B,), the previous step's prediction (zeros before t = 0: silence); every backend
    reads and updates them in this layout.
    """

    ring: Tensor
    x: Tensor
    t: int = 0
    speaker: Tensor | None = None
    hist: Tensor | None = None
    p: Tensor | None = None

    @property
    def batch(self) -> int:
        return self.x.shape[0]


class IncrementalWaveNet:
    """A :class:`WaveNet` re-laid out for fast step-by-step generation (see the module doc).

    Args:
        model: the trained network (its current weights are copied; later changes are not seen).
        backend: ``"torch"``, ``"compile"`` or ``"cpp"`` (see the module docstring).
        dtype: storage dtype of the per-step weight matrices: float32 (exact mode), bfloat16,
            float16 (not "cpp") or int8 ("cpp" only: 8-bit products, see the module doc).
            State, sums and the conditioning stay float32.
        amortize: compute the past taps of layers with dilation >= 2 once per ``d`` steps.
        matvec: how batch-1 products are computed when compiled: ``"auto"`` (elementwise
            product + sum, which Inductor turns into one loop, for batch 1; ``torch.mm``
            otherwise), ``"mm"`` or ``"sum"``.
        threads: CPU threads of the "cpp" kernel: a batch of at least that many streams is
            split by streams; a smaller one by the columns of every product (with a barrier
            after each, which pays off only on otherwise idle cores).
    """

    def __init__(self, model: WaveNet, *, backend: str = "torch",
                 dtype: torch.dtype = torch.float32, amortize: bool = True,
                 matvec: str = "auto", threads: int = 1) -> None:
        if not isinstance(model, WaveNet):
            raise TypeError(f"IncrementalWaveNet expects a WaveNet, got {type(model).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if dtype not in WEIGHT_DTYPES:
            raise ValueError(f"dtype must be one of {WEIGHT_DTYPES}, got {dtype}")
        if matvec not in ("auto", "mm", "sum"):
            raise ValueError(f"matvec must be 'auto', 'mm' or 'sum', got {matvec!r}")
        if isinstance(threads, bool) or int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.threads = int(threads)
        cfg = model.cfg
        self.model, self.cfg, self.head = model, cfg, model.head
        self.backend, self.compile = backend, backend == "compile"
        self.dtype, self.amortize, self.matvec = dtype, amortize, matvec
        self.L, self.R, self.G = cfg.layers, cfg.residual_channels, cfg.gate_channels
        self.H, self.S, self.k = self.G // 2, cfg.skip_channels, cfg.kernel_size
        self.dilations = list(cfg.dilations)
        self.C = self.head.out_channels  # what run(return_params=True) returns per step
        self.C_net = self.head.net_channels  # what the network computes (C - 1 for LP)
        self.order = int(cfg.lpc_order)  # > 0: LP-WaveNet
        self.ptaps = int(cfg.pitch_taps)  # > 0: inputs one pitch period back
        self.pexc = bool(cfg.pitch_excitation)  # and their excitation (reads order more)
        #: samples of the past an LP state keeps: the prediction's order, or the longest pitch
        #: period plus half the taps (plus the order, for the taps' excitation)
        self.history = self.order
        if self.ptaps:
            self.max_lag = round(cfg.sample_rate / F0_MIN)
            self.history = max(self.order,
                               self.max_lag + self.ptaps // 2 + self.order * self.pexc)
        self.period = self.k * math.lcm(*self.dilations)
        # layers whose past taps are precomputed in blocks of d steps
        self.blocked = [amortize and d >= 2 and self.k >= 2 for d in self.dilations]
        self.device = next(model.parameters()).device
        self._fold(model)
        self.fused_sampler = self.head.engine_samples
        self._past_idx: list[Tensor] | None = None
        self._compiled: dict[tuple[int, bool], object] = {}
        self._kernel = None
        if backend == "cpp":
            if self.device.type != "cpu" or dtype == torch.float16 or not self.fused_sampler:
                raise ValueError("backend 'cpp' needs a MoL head on the CPU with float32, "
                                 "bfloat16 or int8 weights; use backend='torch' or 'compile'")
            self._kernel = _CppNet(self)
        elif dtype == torch.int8:
            raise ValueError(f"int8 weights need backend 'cpp', got {backend!r}")

    # ---- weight folding ---------------------------------------------------------------------
    @torch.no_grad()
    def _fold(self, model: WaveNet) -> None:
        f64 = torch.float64
        L, R, G, H, k = self.L, self.R, self.G, self.H, self.k
        c = math.sqrt(0.5)
        # tanh(a) = 2 sigmoid(2a) - 1: double the tanh half's pre-activation, so one sigmoid
        # covers the gate; the step computes u / 2 = (sigmoid(2a) - 1/2) sigmoid(b)
        gate_scale = torch.cat([torch.full((H,), 2.0, dtype=f64), torch.ones(H, dtype=f64)])
        # (R,), or for LP (3, R): rows multiply x[t-1], p_t, x[t-1] - p[t-1]
        w_first = model.first.weight.detach().to(f64)[:, :, 0].T.contiguous()
        if not self.order:
            w_first = w_first.reshape(R)
        offset = model.first.bias.detach().to(f64).clone()  # e_0: h_0 - (w_first x)
        offsets, taps, biases, conds, gconds, outs, skips = [], [], [], [], [], [], []
        skip_bias = torch.zeros(self.S, dtype=f64)
        for layer in model.layers:
            offsets.append(offset.clone())
            w = layer.conv.weight.detach().to(f64)  # (G, R, k): tap j multiplies h[t-(k-1-j)d]
            b = layer.conv.bias.detach().to(f64) + w.sum(-1) @ offset  # the offset, moved here
            taps.append(w * gate_scale[:, None, None])
            biases.append(b * gate_scale)
            conds.append(layer.cond.weight.detach().to(f64)[:, :, 0] * gate_scale[:, None])
            if layer.gcond is not None:
                gconds.append(layer.gcond.weight.detach().to(f64)[:, :, 0] * gate_scale[:, None])
            if layer.out is not None:  # the last layer may have none: its h feeds nothing
                wo = layer.out.weight.detach().to(f64)[:, :, 0]
                # the gate output is computed as u / 2: double the 1x1s that read it
                outs.append(wo * (2.0 * c))  # h_{i+1} = c h_i + c (W u + b)
                offset = c * (offset + layer.out.bias.detach().to(f64))
            ws, bs = layer.skip.weight.detach().to(f64)[:, :, 0], layer.skip.bias.detach().to(f64)
            skips.append(ws * (2.0 * math.sqrt(1.0 / L)))
            skip_bias += bs * math.sqrt(1.0 / L)
        # int8 is the C++ kernel's own layout (_CppNet); these stay float32 for it
        dev, wd = self.device, torch.float32 if self.dtype == torch.int8 else self.dtype

        def dense(t: Tensor) -> Tensor:  # (N, K) -> (K, N): products read as x @ w
            return t.detach().T.to(device=dev, dtype=wd).contiguous()

        self.w_first = w_first.to(dev, torch.float32)
        # the ring starts at minus the offset: the real network pads each layer with h = 0
        self.ring_init = torch.stack(offsets).neg().to(dev, torch.float32)  # (L, R)
        # (k R, G), row block j = tap j: the gathered rows are [h(t-(k-1)d), ..., h(t)]
        self.w_taps = [dense(w.permute(0, 2, 1).reshape(G, k * R)) for w in taps]
        self.w_cur = [dense(w[:, :, -1]) for w in taps]  # (R, G), amortized layers
        self.w_past = [[w[:, :, j].T.to(dev, torch.float32).contiguous() for j in range(k - 1)]
                       for w in taps]  # (R, G) per past tap, block products stay float32
        self.w_out = [dense(w) for w in outs]  # (H, R)
        self.w_skip = dense(torch.cat(skips, dim=1))  # (L H, S): one product for all layers
        self.b_skip = skip_bias.to(dev, torch.float32)
        self.w_cond = torch.cat(conds, 0).T.to(dev, torch.float32).contiguous()  # (cin, L G)
        self.b_cond = torch.cat(biases).to(dev, torch.float32)  # (L G,)
        self.w_gcond = (torch.cat(gconds, 0).T.to(dev, torch.float32).contiguous()
                        if gconds else None)  # (gin, L G)
        post1, post2 = model.post_convs
        self.w_post1, self.b_post1 = dense(post1.weight[:, :, 0]), post1.bias.float().to(dev)
        self.w_post2, self.b_post2 = dense(post2.weight[:, :, 0]), post2.bias.float().to(dev)
        if self.head.engine_samples:
            self.log_scale_min = self.head.engine_log_scale_min

    def weight_bytes_per_step(self) -> float:
        """Bytes of weights one batch-1 step reads (blocked past taps: their share per step).

        Batch-1 generation is bound by this traffic: weights do not fit in a core's cache.
        """
        item = torch.tensor([], dtype=self.dtype).element_size()
        n = sum(self.w_cur[i].numel() if b else self.w_taps[i].numel()
                for i, b in enumerate(self.blocked))
        n += sum(w.numel() for w in self.w_out) + self.w_skip.numel()
        past = sum(sum(w.numel() for w in self.w_past[i]) / d
                   for i, d in enumerate(self.dilations) if self.blocked[i])
        ends = self.w_post1.numel() + self.w_post2.numel()
        # past taps are float32 except in an int8 engine; its output products are float32
        int8 = self.dtype == torch.int8
        return (n + ends * (4 if int8 else 1)) * item + past * (item if int8 else 4)

    # ---- state and inputs ---------------------------------------------------------------------
    def new_state(self, batch: int = 1, speaker: Tensor | None = None) -> IncrementalState:
        """Fresh state for ``batch`` streams (silence before t = 0, as in training).

        ``speaker``: (batch,) integer ids if the model has global conditioning.
        """
        if int(batch) != batch or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        g = self.model._global(speaker, batch, self.device)
        lay = self._kernel or self
        ring = lay.ring_init[:, None, None, :].expand(self.L, self.period, batch, lay.R)
        hist = p = None
        if self.order:
            hist = torch.zeros(batch, self.history, device=self.device)
            p = torch.zeros(batch, device=self.device)
        return IncrementalState(ring=ring.contiguous(),
                                x=torch.zeros(batch, device=self.device), speaker=g,
                                hist=hist, p=p)

    def _bias(self, state: IncrementalState, lay) -> Tensor:
        """(B, L G) conditioning biases of each stream (conv biases + speaker projection)."""
        bias = lay.b_cond.expand(state.batch, -1)
        if state.speaker is not None:
            bias = bias + state.speaker[:, :, 0] @ lay.w_gcond
        return bias

    def _project(self, c: Tensor, state: IncrementalState) -> Tensor:
        """Every step's per-layer conditioning, biases included: (B, cin, T) -> (T, B, L, G)."""
        B, cin, T = c.shape
        base = (c.permute(2, 0, 1).float().reshape(T * B, cin) @ self.w_cond).view(T, B, -1)
        base += self._bias(state, self)
        return base.view(T, B, self.L, self.G)

    def draw_noise(self, steps: int, batch: int, *, generator: torch.Generator | None = None,
                   temperature: float = 1.0, scale_temperature: float = 1.0) -> MoLNoise:
        """Noise for ``steps`` steps of a MoL head, drawn in a fixed order from ``generator``.

        ``temperature`` multiplies the Gumbel noise (divides the logits), ``scale_temperature``
        the logistic noise (multiplies the components' scales); both finite and >= 0. The
        uniforms drawn do not depend on either.
        """
        temperature = _check_temperature("temperature", temperature)
        st = _check_temperature("scale_temperature", scale_temperature)
        M = self.C_net // 3
        tiny = torch.finfo(torch.float32).tiny  # log(u) and log(-log(u)) must stay finite
        u = torch.rand(steps, batch, M + 1, generator=generator).clamp_(min=tiny)
        u = u.to(self.device)
        gumbel = -torch.log(-torch.log(u[..., :M])) * temperature
        v = u[..., M]
        logistic = torch.log(v) - torch.log1p(-v)
        if st != 1.0:
            logistic = logistic * st
        return MoLNoise(gumbel, logistic)

    # ---- the step -------------------------------------------------------------------------
    def _mv(self, x: Tensor, w: Tensor, sum_form: bool) -> Tensor:
        """x (B, K) float32 times w (K, N) -> (B, N) float32."""
        if w.dtype != torch.float32:
            x = x.to(w.dtype)
        # batch 1 under Inductor: a product + sum becomes one streaming loop over the rows of w
        y = (x[:, :, None] * w).sum(1) if sum_form else x @ w
        return y.float()

    def _step(self, x_prev: Tensor, base: Tensor, past: Tensor, gumbel: Tensor | None,
              logistic: Tensor | None, p: Tensor | None = None, e: Tensor | None = None,
              taps: Tensor | None = None, sum_form: bool = False
              ) -> tuple[Tensor, Tensor, Tensor]:
        """One time step of B streams, a pure function (what ``backend="compile"`` compiles).

        Args:
            x_prev: (B,) previous samples.
            base: (B, L, G) the step's conditioning (+ past taps of blocked layers).
            past: (n, k-1, B, R) the past tap rows of the n unblocked layers.
            gumbel, logistic: the step's MoL noise, or None to skip sampling.
            p, e: LP models: (B,) this step's prediction p_t and the previous residual
                x[t-1] - p[t-1]; p shifts the sampled component's mean.
            taps: models with pitch taps: (B, K) the samples around one period back.

        Returns:
            sample (B,) (``x_prev`` if not sampled), y (B, C_net), every layer's input
            (L, B, R).
        """
        k, R, H = self.k, self.R, self.H
        B = x_prev.shape[0]
        if p is None:
            h = x_prev[:, None] * self.w_first  # (B, R): the offset input of layer 0
        else:
            w = self.w_first
            h = x_prev[:, None] * w[0] + p[:, None] * w[1] + e[:, None] * w[2]
            if taps is not None:
                h = h + taps @ w[3:]
        hs, us, n = [], [], 0
        for i in range(self.L):
            hs.append(h)
            if self.blocked[i]:
                z = base[:, i] + self._mv(h, self.w_cur[i], sum_form)
            else:  # rows [h(t-(k-1)d), ..., h(t-d), h(t)] against the stacked (k R, G) taps
                taps = torch.cat([past[n].transpose(0, 1).reshape(B, (k - 1) * R), h], dim=1)
                z = base[:, i] + self._mv(taps, self.w_taps[i], sum_form)
                n += 1
            z = torch.sigmoid(z)
            u = (z[:, :H] - 0.5) * z[:, H:]  # tanh(a) sigmoid(b) / 2, see _fold
            us.append(u)
            if i + 1 < self.L:
                h = math.sqrt(0.5) * h + self._mv(u, self.w_out[i], sum_form)
        s = self._mv(torch.cat(us, dim=1), self.w_skip, sum_form) + self.b_skip
        y = self._mv(torch.relu(s), self.w_post1, sum_form) + self.b_post1
        y = self._mv(torch.relu(y), self.w_post2, sum_form) + self.b_post2  # (B, C)
        if gumbel is None:
            return x_prev, y, torch.stack(hs)
        return sample_mol(y, gumbel, logistic, self.log_scale_min, p), y, torch.stack(hs)

    def _past_index(self) -> list[Tensor]:
        """Per ring slot, the rows of ``ring.view(L * P, B, R)`` holding the unblocked past taps."""
        P, k = self.period, self.k
        idx = []
        for slot in range(P):
            rows = [i * P + (slot - (k - 1 - j) * d) % P
                    for i, d in enumerate(self.dilations) if not self.blocked[i]
                    for j in range(k - 1)]
            idx.append(torch.tensor(rows, dtype=torch.long, device=self.device))
        return idx

    def _block(self, ring: Tensor, base: Tensor, t: int, row: int, steps: int) -> None:
        """Add the past taps of blocked layers due at step ``t`` to ``base[row:row + steps]``."""
        P, k = self.period, self.k
        B = ring.shape[2]
        for i, d in enumerate(self.dilations):
            if not self.blocked[i] or (t % d and row):
                continue
            m = min(d - t % d, steps - row)  # up to the next multiple of d, inside the chunk
            out = base[row:row + m, :, i].view(m * B, self.G)  # rows (t, b), stride L G
            for j in range(k - 1):
                s = (t - (k - 1 - j) * d) % P  # m slots from s never wrap: P is a multiple of d
                out.addmm_(ring[i, s:s + m].view(m * B, self.R), self.w_past[i][j])

    def _get_step(self, batch: int):
        if not self.compile:
            return lambda *a: self._step(*a, sum_form=False)
        sum_form = self.matvec == "sum" or (self.matvec == "auto" and batch == 1)
        key = (batch, sum_form)
        if key not in self._compiled:
            fn = lambda *a: self._step(*a, sum_form=sum_form)  # noqa: E731
            self._compiled[key] = torch.compile(fn, dynamic=False, fullgraph=True)
        return self._compiled[key]

    @torch.inference_mode()
    def run(self, state: IncrementalState, cond: Tensor, *, noise: MoLNoise | None = None,
            generator: torch.Generator | None = None, temperature: float = 1.0,
            scale_temperature: float = 1.0, teacher: Tensor | None = None,
            lpc: Tensor | None = None, lags: Tensor | None = None,
            return_params: bool = False, callback=None) -> Tensor | tuple[Tensor, Tensor]:
        """Generate ``T = cond.shape[-1]`` steps; the state advances by T.

        Args:
            state: from :meth:`new_state`.
            cond: (B, cin, T) the steps' conditioning (``model.conditioning(mel)``);
                each layer's projection of it is computed here, in one product per call.
            noise: :meth:`draw_noise` output for the MoL head (drawn here from ``generator``
                with ``temperature`` and ``scale_temperature`` if None). Other heads sample
                with ``head.sample(generator=, temperature=, scale_temperature=)``.
            teacher: (B, T) true samples: feed them instead of the samples (teacher forcing).
            lpc: LP models only, required: (B, T, order) the coefficients ``a_k`` of each step
                (:func:`lpc_per_sample` of ``model.lpc(mel)``); step t predicts
                ``p_t = -sum_k lpc[:, t, k - 1] x[t - k]`` from the stream's own past.
            lags: models with pitch taps only, required: (B, T) integer pitch period of each
                step in samples (:func:`lpc_per_sample` of ``model.pitch_lags(mel)``).
            return_params: also return what ``model.forward`` outputs, (B, C, T) (for an LP
                model the last channel is p_t).
            callback: called with the number of steps done, every 256 steps (progress bars).

        Returns:
            samples (B, T) [, params (B, C, T)].
        """
        cin = self.w_cond.shape[0]
        if not isinstance(cond, Tensor) or cond.dim() != 3 or cond.shape[1] != cin:
            got = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
            raise ValueError(f"cond must have shape (B, {cin}, T), got {got}")
        B, T = cond.shape[0], cond.shape[2]
        if B != state.batch:
            raise ValueError(f"cond has batch {B}, the state {state.batch}")
        if teacher is not None and tuple(teacher.shape) != (B, T):
            raise ValueError(f"teacher must have shape (B, T) = {(B, T)}, got "
                             f"{tuple(teacher.shape)}")
        temperature = _check_temperature("temperature", temperature)
        scale_temperature = _check_temperature("scale_temperature", scale_temperature)
        w_lp = None
        if self.order:
            if not isinstance(lpc, Tensor) or tuple(lpc.shape) != (B, T, self.order):
                got = tuple(lpc.shape) if isinstance(lpc, Tensor) else lpc
                raise ValueError(f"an LP model needs lpc=, the coefficients of every step, "
                                 f"shape (B, T, order) = {(B, T, self.order)}, got {got}")
            if state.hist is None or state.p is None:
                raise ValueError("the state has no LP history: make it with new_state()")
            # w[..., j] = -a_{order - j}: a dot product with the samples in time order
            w_lp = lpc.to(self.device, torch.float32).flip(-1).neg().contiguous()
        elif lpc is not None:
            raise ValueError("lpc= given, but the model has no linear prediction (lpc_order 0)")
        lags = self._check_lags(lags, B, T)
        fused = self.fused_sampler and teacher is None
        if fused and noise is None:
            noise = self.draw_noise(T, B, generator=generator, temperature=temperature,
                                    scale_temperature=scale_temperature)
        out = torch.empty(B, T, device=self.device)
        params = torch.empty(B, self.C, T, device=self.device) if return_params else None
        if self._kernel is not None:
            self._kernel.run(state, cond, self._bias(state, self._kernel), noise, teacher,
                             w_lp, lags, out, params)
            if callback is not None:
                callback(T)
        else:
            self._loop(state, self._project(cond, state), T, self._get_step(B), fused, noise,
                       teacher, generator, temperature, scale_temperature, w_lp, lags, out,
                       params, callback)
        return (out, params) if return_params else out

    def _check_lags(self, lags: Tensor | None, B: int, T: int) -> Tensor | None:
        if not self.ptaps:
            if lags is not None:
                raise ValueError("lags= given, but the model has no pitch taps (pitch_taps 0)")
            return None
        if not isinstance(lags, Tensor) or tuple(lags.shape) != (B, T) \
                or lags.dtype.is_floating_point:
            got = (tuple(lags.shape), lags.dtype) if isinstance(lags, Tensor) else lags
            raise ValueError(f"a model with pitch taps needs lags=, the integer pitch period of "
                             f"every step, shape (B, T) = {(B, T)}, got {got}")
        half = self.ptaps // 2
        top = self.history - half - self.order * self.pexc
        if T and (int(lags.min()) <= half or int(lags.max()) > top):
            raise ValueError(f"lags must lie in [{half + 1}, {top}], got "
                             f"{int(lags.min())}..{int(lags.max())}")
        return lags.to(self.device, torch.int64).contiguous()

    def _loop(self, state, base, T, step, fused, noise, teacher, generator, temperature,
              scale_temperature, w_lp, lags, out, params, callback) -> None:
        B = state.batch
        ring, x = state.ring, state.x
        flat = ring.view(-1, B, self.R)
        n_past = self.blocked.count(False)
        if self._past_idx is None:
            self._past_idx = self._past_index()
        O, HN, half = self.order, self.history, self.ptaps // 2
        p = e = taps = None
        if O:  # buf[:, j]: sample t0 - HN + j (the history, then this call's samples)
            buf = torch.cat([state.hist.float(), x.new_zeros(B, T)], dim=1)
            p_prev = state.p
            if lags is not None:  # offsets of the taps around one period back (and, for
                # their excitation, the order samples before them)
                lo = -half - O * self.pexc
                around = torch.arange(lo, half + 1, device=self.device)
        for r in range(T):
            t = state.t + r
            slot = t % self.period
            self._block(ring, base, t, r, T)
            past = flat.index_select(0, self._past_idx[slot]).view(n_past, self.k - 1, B, self.R)
            if O:
                p = (buf[:, HN - O + r:HN + r] * w_lp[:, r]).sum(-1)
                e = x - p_prev
                if lags is not None:
                    taps = buf.gather(1, (HN + r - lags[:, r])[:, None] + around)
                    if self.pexc:  # residual of each tap under this step's coefficients
                        ex = taps[:, O:] - (taps.unfold(1, O, 1)[:, :-1] * w_lp[:, r, None]
                                            ).sum(-1)
                        taps = torch.cat([taps[:, O:], ex], dim=1)
            if fused:
                x, y, hs = step(x, base[r], past, noise.gumbel[r], noise.logistic[r], p, e,
                                taps)
            else:
                _, y, hs = step(x, base[r], past, None, None, p, e, taps)
                if teacher is not None:
                    x = teacher[:, r].float()
                else:
                    # an LP head draws the excitation (loc 0, clipped to its range) and p_t
                    # is added after the clip (see above sample_mol)
                    yl = y if p is None else torch.cat([y, torch.zeros_like(p)[:, None]], dim=1)
                    x = self.head.sample(yl[:, :, None], generator=generator,
                                         temperature=temperature,
                                         scale_temperature=scale_temperature)[:, 0].float()
                    if p is not None:
                        x = x + p
            ring[:, slot] = hs
            out[:, r] = x
            if O:
                buf[:, HN + r] = x
                p_prev = p
            if params is not None:
                params[:, :self.C_net, r] = y
                if O:
                    params[:, self.C_net, r] = p
            if callback is not None and (r + 1) % 256 == 0:
                callback(256)
        if callback is not None and T % 256:
            callback(T % 256)
        state.x, state.t = x.clone(), state.t + T
        if O:
            state.hist, state.p = buf[:, T:].clone(), p_prev.clone()


# ---- the C++ kernel ------------------------------------------------------------------------
def _up(n: int, m: int) -> int:
    return -(-n // m) * m


def _load_kernel() -> ctypes.CDLL:
    """Build (once per source, compiler, flags and CPU) and load ``csrc/wavenet_step.cpp``.

    ``DMOL_PORTABLE_KERNEL=1``: build without ``-march=native`` (the portable code path, which
    the tests run beside the native one; also a way round a compiler that mishandles -march).
    """
    portable = os.environ.get("DMOL_PORTABLE_KERNEL", "") not in ("", "0")
    lib = _native.load("wavenet_step.cpp",
                       _native.PORTABLE_FLAGS if portable else _native.NATIVE_FLAGS)
    lib.dmol_wavenet_run.restype = ctypes.c_int
    lib.dmol_base_floats.restype = ctypes.c_int64
    return lib


def cpp_problem() -> str | None:
    """Why the ``"cpp"`` backend cannot be built and loaded here (one line), or None."""
    try:
        _load_kernel()
    except _native.CompilerMissing as e:
        return str(e)
    except (RuntimeError, OSError) as e:  # BuildFailed carries the compiler's output
        first = next((ln for ln in str(e).splitlines()[1:] if "error" in ln), "")
        return f"building the C++ kernel failed: {first.strip() or str(e).splitlines()[0]}"
    return None


def cpp_available() -> bool:
    """Whether the ``"cpp"`` backend can be built and loaded here."""
    return cpp_problem() is None


class _Net(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in
                ("L", "R", "G", "H", "S", "C", "M", "k", "P", "bf16", "C_out", "cin",
                 "order", "ptaps", "HN", "pexc")] + [
        ("dil", ctypes.c_void_p), ("blocked", ctypes.c_void_p), ("w_first", ctypes.c_void_p),
        ("w_main", ctypes.c_void_p), ("w_past", ctypes.c_void_p), ("w_out", ctypes.c_void_p),
        ("w_skip", ctypes.c_void_p), ("b_skip", ctypes.c_void_p),
        ("w_post1", ctypes.c_void_p), ("b_post1", ctypes.c_void_p),
        ("w_post2", ctypes.c_void_p), ("b_post2", ctypes.c_void_p),
        ("w_cond", ctypes.c_void_p), ("log_scale_min", ctypes.c_float)]


class _Q8(ctypes.Structure):
    _fields_ = [("q", ctypes.c_void_p), ("scale", ctypes.c_void_p), ("pre", ctypes.c_void_p),
                ("Kp", ctypes.c_int64), ("N", ctypes.c_int64)]


class _Q8Matrix:
    """A (K, N) float matrix as the kernel's int8 panels (struct Q8 in wavenet_step.cpp).

    One scale per column (its largest magnitude maps to 127: columns differ by orders of
    magnitude, rows of one column much less); the 4-row groups of each 32-column panel are
    contiguous for vpdpbusd; ``pre`` holds the columns' sums of q every 16 rows.
    """

    def __init__(self, m: Tensor) -> None:
        K, N = m.shape
        top = m.abs().amax(0)
        self.scale = torch.where(top > 0, top / 127, torch.ones_like(top)).float().contiguous()
        q = torch.round(m / self.scale).clamp(-127, 127).to(torch.int8)
        self.q = q.view(K // 4, 4, N // 32, 32).permute(2, 0, 3, 1).contiguous()
        self.pre = torch.zeros(K // 16 + 1, N, dtype=torch.int32)
        self.pre[1:] = q.int().view(K // 16, 16, N).sum(1).cumsum(0)
        self.struct = _Q8(self.q.data_ptr(), self.scale.data_ptr(), self.pre.data_ptr(), K, N)

    def data_ptr(self) -> int:
        return ctypes.addressof(self.struct)


class _Q8Array:
    """Consecutive Q8 descriptors (a layer's past taps)."""

    def __init__(self, mats: list[_Q8Matrix]) -> None:
        self.mats = mats
        self.array = (_Q8 * len(mats))(*[m.struct for m in mats])

    def data_ptr(self) -> int:
        return ctypes.addressof(self.array)


class _CppNet:
    """The engine's weights laid out for ``dmol/csrc/wavenet_step.cpp``, and the call into it.

    Sizes are padded (R, S, C to multiples of 32, H to 16) and every matrix is cut into
    panels of 32 columns, each stored as one contiguous (K, 32) block; the gate columns are
    interleaved so that a panel holds 16 tanh-half columns and their 16 sigmoid-half partners.
    The conditioning projection (done in the kernel) and the ring use the same layout.
    """

    def __init__(self, e: IncrementalWaveNet) -> None:
        self.lib = _load_kernel()
        self._base = torch.empty(0)
        self.threads = e.threads
        L, R, H, S, C, k = e.L, e.R, e.H, e.S, e.C_net, e.k
        self.R, self.H, self.S, self.C = _up(R, 32), _up(H, 16), _up(S, 32), _up(C, 32)
        Rp, Hp, Sp, Cp = self.R, self.H, self.S, self.C
        self.G = Gp = 2 * Hp
        q = torch.arange(H)
        gate = torch.cat([q // 16 * 32 + q % 16, q // 16 * 32 + 16 + q % 16])  # column moves
        ident = torch.arange

        def pad(w: Tensor, rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> Tensor:
            out = torch.zeros(shape)
            out[rows[:, None], cols[None, :]] = w.float()
            return out

        wd = e.dtype
        # bfloat16 on a CPU with bfloat16 dot products: the products run in bfloat16 too
        self.dp = wd == torch.bfloat16 and bool(self.lib.dmol_has_bf16_products())
        self.q8 = wd == torch.int8

        def panels(m: Tensor, dtype: torch.dtype) -> Tensor | _Q8Matrix:  # (K, N) panels
            K, N = m.shape
            if dtype == torch.int8:
                return _Q8Matrix(m)
            if self.dp and dtype == torch.bfloat16:  # rows in pairs: (N / 32, K / 2, 32, 2)
                return m.view(K // 2, 2, N // 32, 32).permute(2, 0, 3, 1).to(dtype).contiguous()
            return m.view(K, N // 32, 32).transpose(0, 1).to(dtype).contiguous()

        taps_rows = (torch.arange(k)[:, None] * Rp + ident(R)[None]).reshape(-1)
        main, past = [], []
        for i in range(L):
            if e.blocked[i]:
                main.append(panels(pad(e.w_cur[i], ident(R), gate, (Rp, Gp)), wd))
                taps = [panels(pad(w, ident(R), gate, (Rp, Gp)),
                               torch.int8 if self.q8 else torch.float32) for w in e.w_past[i]]
                past.append(_Q8Array(taps) if self.q8 else torch.stack(taps))
            else:
                main.append(panels(pad(e.w_taps[i], taps_rows, gate, (k * Rp, Gp)), wd))
                past.append(None)
        outs = [panels(pad(w, ident(H), ident(R), (Hp, Rp)), wd) for w in e.w_out]
        skip_rows = (torch.arange(L)[:, None] * Hp + ident(H)[None]).reshape(-1)
        # int8: the two output products stay float32 (they set the distribution's parameters;
        # in 8 bits they cost the pretrained model 0.05 MR-STFT and 5 Hz F0 RMSE, measured)
        ends = torch.float32 if self.q8 else wd
        dense = [panels(pad(e.w_skip, skip_rows, ident(S), (L * Hp, Sp)), wd),
                 panels(pad(e.w_post1, ident(S), ident(S), (Sp, Sp)), ends),
                 panels(pad(e.w_post2, ident(S), ident(C), (Sp, Cp)), ends)]

        def vec(v: Tensor, n: int) -> Tensor:
            out = torch.zeros(n)
            out[:v.numel()] = v.float()
            return out

        w_first = torch.zeros(e.w_first.reshape(-1, R).shape[0], Rp)  # (1 or 3, Rp)
        w_first[:, :R] = e.w_first.reshape(-1, R)
        biases = [w_first.reshape(-1), vec(e.b_skip, Sp), vec(e.b_post1, Sp),
                  vec(e.b_post2, Cp)]
        # the conditioning projection and the ring in this layout (used by the engine)
        cols = (torch.arange(L)[:, None] * Gp + gate[None]).reshape(-1)
        cin = e.w_cond.shape[0]
        self.cin = _up(cin, 16)  # the bfloat16 products convert rows 16 values at a time
        self.w_cond = pad(e.w_cond, ident(cin), cols, (self.cin, L * Gp))
        self.b_cond = torch.zeros(L * Gp).index_copy_(0, cols, e.b_cond.float())
        self.w_gcond = (None if e.w_gcond is None else
                        pad(e.w_gcond, ident(e.w_gcond.shape[0]), cols,
                            (e.w_gcond.shape[0], L * Gp)))
        self.ring_init = torch.zeros(L, Rp)
        self.ring_init[:, :R] = e.ring_init
        w_cond = panels(self.w_cond, wd)
        ints = torch.tensor([e.dilations, [int(b) for b in e.blocked]], dtype=torch.int64)
        self._keep = [main, past, outs, ints, dense, biases, w_cond]  # the kernel has pointers

        def ptrs(ts: list) -> ctypes.Array:
            arr = (ctypes.c_void_p * len(ts))(*[0 if t is None else t.data_ptr() for t in ts])
            self._keep.append(arr)
            return arr

        self.net = _Net(
            L, Rp, Gp, Hp, Sp, Cp, C // 3, k, e.period,
            3 if self.q8 else 2 if self.dp else int(wd != torch.float32),
            e.C, self.cin, e.order, e.ptaps, e.history, int(e.pexc),
            ints[0].data_ptr(), ints[1].data_ptr(), biases[0].data_ptr(),
            ctypes.addressof(ptrs(main)), ctypes.addressof(ptrs(past)),
            ctypes.addressof(ptrs(outs)), dense[0].data_ptr(), biases[1].data_ptr(),
            dense[1].data_ptr(), biases[2].data_ptr(), dense[2].data_ptr(),
            biases[3].data_ptr(), w_cond.data_ptr(), e.log_scale_min)

    def run(self, state: IncrementalState, cond: Tensor, bias: Tensor, noise: MoLNoise | None,
            teacher: Tensor | None, w_lp: Tensor | None, lags: Tensor | None, out: Tensor,
            params: Tensor | None) -> None:
        B, cin, T = cond.shape
        if cin == self.cin:  # (T, B, cin) rows
            c = cond.permute(2, 0, 1).float().contiguous()
        else:  # zero-padded like w_cond's rows
            c = torch.zeros(T, B, self.cin)
            c[:, :, :cin] = cond.permute(2, 0, 1)
        keep = [c]

        def ptr(t: Tensor | None) -> int | None:
            if t is None:
                return None
            t = t.float().contiguous()
            keep.append(t)
            return t.data_ptr()

        lp = w_lp is not None
        named = [("ring", state.ring), ("x", state.x)]
        if lp:
            named += [("hist", state.hist), ("p", state.p)]
        for name, t in named:
            if not (t.is_contiguous() and t.dtype == torch.float32):
                raise ValueError(f"state.{name} must be a contiguous float32 tensor")
        # the kernel's buffer of projected conditioning (a few steps' worth), kept between calls
        n_base = self.lib.dmol_base_floats(ctypes.byref(self.net), ctypes.c_int64(B))
        if self._base.numel() < n_base:
            self._base = torch.empty(n_base)
        base = self._base
        self.lib.dmol_wavenet_run(
            ctypes.byref(self.net), ctypes.c_int64(B), ctypes.c_int64(T),
            ctypes.c_int64(state.t), ctypes.c_void_p(state.ring.data_ptr()),
            ctypes.c_void_p(state.x.data_ptr()), ctypes.c_void_p(c.data_ptr()),
            ctypes.c_void_p(ptr(bias)),
            ctypes.c_void_p(ptr(None if noise is None else noise.gumbel)),
            ctypes.c_void_p(ptr(None if noise is None else noise.logistic)),
            ctypes.c_void_p(ptr(teacher)), ctypes.c_void_p(out.data_ptr()),
            ctypes.c_void_p(None if params is None else params.data_ptr()),
            ctypes.c_void_p(state.hist.data_ptr() if lp else None),
            ctypes.c_void_p(state.p.data_ptr() if lp else None), ctypes.c_void_p(ptr(w_lp)),
            ctypes.c_void_p(None if lags is None else lags.data_ptr()),
            ctypes.c_void_p(None if base is None else base.data_ptr()),
            ctypes.c_int64(self.threads))
        state.t += T
