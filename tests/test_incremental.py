"""The incremental engine (dmol.wavenet.incremental): teacher-forced it reproduces
model.forward on every backend (torch, C++ native and portable, the traced "compile" step),
free-running it feeds back its own draws (every head, LP or not, bfloat16, batches on threads),
its samplers follow the tempered pmf, and streaming trims its mel buffer without a change.
Tiny models with perturbed weights, a few hundred steps each."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dmol.benchmarks.baseline_synth import BaselineIncremental
from dmol.logistic import DiscretizedLogisticMixture
from dmol.wavenet.incremental import IncrementalWaveNet, sample_mol
from dmol.wavenet.synthesis import (
    StreamingVocoder,
    make_engine,
    synthesize_folded,
    synthesize_incremental,
)
from helpers import chi2_pvalue, lp_mel, lp_model, random_mel, tiny_model

OTHER_HEADS = ["gaussian", "mog", "mulaw"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mel(frames: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """(B, n_mels, frames)."""
    return torch.from_numpy(np.stack([random_mel(frames, seed=seed + b) for b in range(batch)])
                            ).transpose(1, 2).contiguous()


# ---- the engine reproduces model.forward (MoL head) ----------------------------------------
@pytest.mark.parametrize("amortize", [True, False])
@pytest.mark.parametrize("speakers", [0, 3])
def test_teacher_forced_matches_forward(backend, amortize, speakers):
    """Fed the true previous samples, every step's output equals the parallel forward pass."""
    over = {"gin_channels": 4, "n_speakers": speakers} if speakers else {}
    model = tiny_model(1, **over)
    B, F_ = 2, 9
    hop = model.hop_length
    mel = torch.from_numpy(np.stack([random_mel(F_, seed=s) for s in range(B)])).transpose(1, 2)
    x = torch.rand(B, F_ * hop, generator=torch.Generator().manual_seed(2)) * 1.6 - 0.8
    spk = torch.tensor([2, 0]) if speakers else None
    with torch.no_grad():
        ref = model(x, mel, spk)
        c = model.upsample(mel)
    e = IncrementalWaveNet(model, backend=backend, amortize=amortize)
    state = e.new_state(B, speaker=spk)
    parts = []
    for a, b in [(0, 1), (1, 70), (70, 71), (71, 200), (200, F_ * hop)]:  # uneven chunks
        _, p = e.run(state, c[..., a:b], teacher=x[:, a:b], return_params=True)
        parts.append(p)
    got = torch.cat(parts, dim=-1)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-4


def test_sum_form_step_matches_forward():
    """The step as ``backend="compile"`` traces it (batch-1 products as product + sum)."""
    model = tiny_model(3)
    mel = torch.from_numpy(random_mel(4)).T[None]
    x = torch.rand(1, 4 * model.hop_length, generator=torch.Generator().manual_seed(0)) - 0.5
    with torch.no_grad():
        ref, c = model(x, mel), model.upsample(mel)
    e = IncrementalWaveNet(model)
    e._get_step = lambda batch: (lambda *a: e._step(*a, sum_form=True))
    _, got = e.run(e.new_state(1), c, teacher=x, return_params=True)
    assert (got - ref).abs().max().item() < 1e-4


def test_bfloat16_weights_close(backend):
    """bfloat16 weights (state and sums in float32): within 2e-2 of the float32 network."""
    model = tiny_model(4)
    mel = torch.from_numpy(random_mel(6)).T[None]
    x = torch.rand(1, 6 * model.hop_length, generator=torch.Generator().manual_seed(1)) - 0.5
    with torch.no_grad():
        ref, c = model(x, mel), model.upsample(mel)
    e = IncrementalWaveNet(model, backend=backend, dtype=torch.bfloat16)
    _, got = e.run(e.new_state(1), c, teacher=x, return_params=True)
    err = (got - ref).abs().max().item()
    assert 0 < err < 2e-2  # not exact (else the weights were not rounded), but close


def test_baseline_matches_forward():
    """The benchmark's baseline loop computes the same network (so the timing is fair)."""
    model = tiny_model(5)
    mel = torch.from_numpy(random_mel(3)).T[None]
    x = torch.rand(1, 3 * model.hop_length, generator=torch.Generator().manual_seed(3)) - 0.5
    with torch.no_grad():
        ref = model(x, mel)
    _, got = BaselineIncremental(model).generate(mel, teacher=x)
    assert (got - ref).abs().max().item() < 1e-4


def test_fused_sampler_draws_the_mixture():
    """Kolmogorov-Smirnov: samples of the fused step sampler follow the discretized mixture."""
    torch.manual_seed(0)
    M, N = 4, 20000
    y = torch.cat([torch.randn(M), torch.rand(M) * 1.6 - 0.8, torch.rand(M) * 2 - 5])[None]
    model = tiny_model()
    e = IncrementalWaveNet(model)
    noise = e.draw_noise(N, 1, generator=torch.Generator().manual_seed(1))
    x = sample_mol(y.expand(N, -1), noise.gumbel[:, 0], noise.logistic[:, 0], -16.0)
    dist = DiscretizedLogisticMixture(y[0, :M], y[0, M:2 * M], y[0, 2 * M:], num_classes=65536)
    xs = x.sort().values
    cdf = dist.cdf(xs.double().clamp(-1, 1)).double()
    ecdf = torch.arange(1, N + 1, dtype=torch.float64) / N
    ks = (cdf - ecdf).abs().max().item()
    assert ks < 1.63 / math.sqrt(N)  # the 1% critical value
    # temperature 0: always the most probable component
    noise0 = e.draw_noise(100, 1, generator=torch.Generator().manual_seed(2), temperature=0.0)
    y0 = y.clone()
    y0[0, 2 * M:] = -12.0  # narrow components: a sample sits on its component's mean
    x0 = sample_mol(y0.expand(100, -1), noise0.gumbel[:, 0], noise0.logistic[:, 0], -16.0)
    best = y[0, :M].argmax()
    assert torch.allclose(x0, y0[0, M + best].expand(100), atol=1e-3)


def test_cpp_and_torch_draw_the_same_samples(cpp):
    model = tiny_model(6)
    mel = random_mel(5)
    a = synthesize_incremental(model, mel, seed=3, backend="torch")
    b = synthesize_incremental(model, mel, seed=3, backend="cpp")
    assert np.abs(a - b).max() < 1e-4


def test_cpp_threads_give_the_same_numbers(cpp):
    """Threads split the columns of each product; every column is summed in the same order."""
    model = tiny_model(10)
    mel = random_mel(5)
    one = synthesize_incremental(model, mel, seed=2, backend="cpp", threads=1)
    two = synthesize_incremental(model, mel, seed=2, backend="cpp", threads=2)
    assert np.array_equal(one, two)
    x = torch.from_numpy(one)[None]
    with torch.no_grad():
        c = model.upsample(torch.from_numpy(mel).T[None])
    outs = []
    for th in (1, 3):
        e = IncrementalWaveNet(model, backend="cpp", threads=th, amortize=False)
        outs.append(e.run(e.new_state(1), c, teacher=x, return_params=True)[1])
    assert torch.equal(outs[0], outs[1])
    # a batch is split by streams instead (amortized taps too): the same numbers again
    f1, f2 = (synthesize_folded(model, mel, seed=3, segment_seconds=0.01, overlap_seconds=0.002,
                                backend="cpp", threads=th) for th in (1, 2))
    assert np.array_equal(f1, f2)
    c3 = c.expand(3, -1, -1)
    outs = []
    for th in (1, 2):
        e = IncrementalWaveNet(model, backend="cpp", threads=th, amortize=True)
        outs.append(e.run(e.new_state(3), c3, generator=torch.Generator()))
    assert torch.equal(outs[0], outs[1])


# ---- LP-WaveNet: the prediction from the generated past -----------------------------------
LP_CASES = [("mol", "torch"), ("gaussian", "torch"), ("mol", "cpp"), ("mol", "cpp-portable")]


@pytest.mark.parametrize(("head", "backend"), LP_CASES, indirect=["backend"])
@pytest.mark.parametrize("amortize", [True, False])
def test_lp_teacher_forced_matches_forward(head, backend, amortize):
    """Fed the true samples, the engine outputs model(x, mel) exactly, the prediction channel
    included, across uneven chunks (the LP history carries over from call to call)."""
    from dmol.wavenet.incremental import lpc_per_sample

    model = lp_model(1, head)
    B, F_ = 2, 9
    hop = model.hop_length
    mel = lp_mel(F_, B)
    x = torch.rand(B, F_ * hop, generator=torch.Generator().manual_seed(2)) * 1.6 - 0.8
    with torch.no_grad():
        ref, c, a = model(x, mel), model.upsample(mel), model.lpc(mel)
    assert ref.shape[1] == model.head.out_channels == model.head.net_channels + 1
    e = IncrementalWaveNet(model, backend=backend, amortize=amortize)
    state = e.new_state(B)
    parts = []
    for lo, hi in [(0, 1), (1, 5), (5, 70), (70, 71), (71, 200), (200, F_ * hop)]:
        xs, p = e.run(state, c[..., lo:hi], teacher=x[:, lo:hi], return_params=True,
                      lpc=lpc_per_sample(a, lo, hi, hop, F_))
        assert torch.equal(xs, x[:, lo:hi])
        parts.append(p)
    got = torch.cat(parts, dim=-1)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-5
    assert torch.equal(state.hist, x[:, -8:]) and torch.equal(state.x, x[:, -1])


def _lp_case(seed: int, frames: int, mel_seed: int, x_seed: int):
    """An LP model, true samples x (1, T), model(x, mel), its conditioning and coefficients."""
    from dmol.wavenet.incremental import lpc_per_sample

    model = lp_model(seed)
    hop = model.hop_length
    mel = lp_mel(frames, seed=mel_seed)
    x = torch.rand(1, frames * hop, generator=torch.Generator().manual_seed(x_seed)) - 0.5
    with torch.no_grad():
        ref, c, a = model(x, mel), model.upsample(mel), model.lpc(mel)
    return model, x, ref, c, lpc_per_sample(a, 0, frames * hop, hop, frames)


def test_lp_sum_form_and_bfloat16(backend):
    """The step as ``backend="compile"`` traces it, and bfloat16 weights, for an LP model."""
    model, x, ref, c, lpc = _lp_case(5, 5, mel_seed=2, x_seed=4)
    if backend == "torch":
        e = IncrementalWaveNet(model)
        e._get_step = lambda batch: (lambda *args: e._step(*args, sum_form=True))
        _, got = e.run(e.new_state(1), c, teacher=x, lpc=lpc, return_params=True)
        assert (got - ref).abs().max().item() < 1e-5
    e = IncrementalWaveNet(model, backend=backend, dtype=torch.bfloat16)
    _, got = e.run(e.new_state(1), c, teacher=x, lpc=lpc, return_params=True)
    err = (got - ref).abs().max().item()
    assert 0 < err < 2e-2


def test_lp_engine_needs_the_coefficients():
    model = lp_model()
    e = IncrementalWaveNet(model)
    c = model.upsample(lp_mel(2))
    with pytest.raises(ValueError, match="lpc"):
        e.run(e.new_state(1), c)
    with pytest.raises(ValueError, match="lpc"):
        e.run(e.new_state(1), c, lpc=torch.zeros(1, c.shape[-1], 3))
    plain = IncrementalWaveNet(tiny_model())
    with pytest.raises(ValueError, match="lpc"):
        plain.run(plain.new_state(1), c, lpc=torch.zeros(1, c.shape[-1], 8))


@pytest.mark.parametrize(("head", "backend"), LP_CASES, indirect=["backend"])
def test_lp_prediction_reads_the_generated_past(head, backend):
    """Free-running, the prediction channel is lp_predict of the engine's own samples."""
    from dmol.audio.lpc import lp_predict
    from dmol.wavenet.incremental import lpc_per_sample

    model = lp_model(2, head)
    B, F_ = 2, 8
    hop = model.hop_length
    mel = lp_mel(F_, B, seed=3)
    with torch.no_grad():
        c, a = model.upsample(mel), model.lpc(mel)
    e = IncrementalWaveNet(model, backend=backend)
    state, g = e.new_state(B), torch.Generator().manual_seed(0)
    xs, ps = [], []
    for lo, hi in [(0, 3), (3, 130), (130, F_ * hop)]:
        x, p = e.run(state, c[..., lo:hi], generator=g, return_params=True,
                     lpc=lpc_per_sample(a, lo, hi, hop, F_))
        xs.append(x)
        ps.append(p)
    x, params = torch.cat(xs, -1), torch.cat(ps, -1)
    pred = lp_predict(x, a, hop)
    assert pred.abs().max().item() > 0.05  # the prediction is not trivially zero
    assert (params[:, -1] - pred).abs().max().item() < 1e-5
    # and the network saw the same samples: teacher forcing them gives the same parameters
    with torch.no_grad():
        ref = model(x, mel)
    assert (params - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("amortize", [True, False])
def test_lp_cpp_and_torch_draw_the_same_samples(cpp, amortize):
    """The same noise gives the same samples (and parameters) on both backends."""
    from dmol.wavenet.incremental import lpc_per_sample

    model = lp_model(6)
    B, F_ = 2, 7
    hop = model.hop_length
    mel = lp_mel(F_, B, seed=5)
    with torch.no_grad():
        c, a = model.upsample(mel), model.lpc(mel)
    outs = []
    for backend in ("torch", "cpp"):
        e = IncrementalWaveNet(model, backend=backend, amortize=amortize)
        state, g = e.new_state(B), torch.Generator().manual_seed(1)
        res = []
        for lo, hi in [(0, 100), (100, 101), (101, F_ * hop)]:
            noise = e.draw_noise(hi - lo, B, generator=g)
            res.append(e.run(state, c[..., lo:hi], noise=noise, return_params=True,
                             lpc=lpc_per_sample(a, lo, hi, hop, F_)))
        outs.append([torch.cat([r[i] for r in res], -1) for i in (0, 1)])
    (x0, p0), (x1, p1) = outs
    assert (x0 - x1).abs().max().item() < 1e-5
    assert (p0 - p1).abs().max().item() < 1e-5
    m = random_mel(6, seed=9)
    a = synthesize_incremental(model, m, seed=3, backend="torch")
    b = synthesize_incremental(model, m, seed=3, backend="cpp")
    assert np.abs(a - b).max() < 1e-5
    # kernel threads (split by columns for one stream, by streams for a batch): same numbers
    assert np.array_equal(b, synthesize_incremental(model, m, seed=3, backend="cpp", threads=2))
    f1, f2 = (synthesize_folded(model, m, seed=3, segment_seconds=0.01, overlap_seconds=0.002,
                                backend="cpp", threads=th) for th in (1, 2))
    assert np.array_equal(f1, f2)


def test_lp_loop_does_not_lock_into_a_saturated_cycle(backend):
    """An LP stream ``x_t = p_t + e_t`` predicts ``p_t`` from its own past: a linear loop,
    stable since A(z) is minimum phase. Clipped inside the loop it can lock into a full-scale
    cycle where the predictor's gain exceeds 1; the engines clip only the excitation, so a
    saturated history dies away. Negative control: the clipped recursion stays saturated."""
    model = lp_model(4, "mol", order=8)
    with torch.no_grad():  # a network that says "no excitation": every mean 0, scale e^-9
        model.post[3].weight.zero_()
        model.post[3].bias.zero_()
        model.post[3].bias[8:].fill_(-9.0)
    a = torch.zeros(0, dtype=torch.float64)  # A(z) from reflection coefficients (step-up)
    for k in (0.83, 0.52, 0.92, 0.44, 0.14, 0.19, -0.12, 0.35):
        a = torch.cat([a + k * a.flip(0), torch.tensor([k], dtype=torch.float64)])
    assert np.abs(np.roots(np.r_[1.0, a.numpy()])).max() < 0.95  # minimum phase
    start = [1.0, 1.0, -1.0, -1.0] * 2  # a saturated history, x[-8 .. -1]

    clipped = list(start)  # x_t = clip(p_t): the loop with the clip inside
    for _ in range(1200):
        clipped.append(float(np.clip(-np.dot(a.numpy(), clipped[:-9:-1]), -1.0, 1.0)))
    assert np.sqrt(np.mean(np.square(clipped[-400:]))) > 0.9  # locked at full scale

    F_ = 1200 // model.hop_length
    T = F_ * model.hop_length
    with torch.no_grad():
        c = model.upsample(lp_mel(F_, seed=2))
    e = IncrementalWaveNet(model, backend=backend)
    state = e.new_state(1)
    state.hist[:, -8:] = torch.tensor(start)
    state.x = state.hist[:, -1].clone()
    lpc = a.float().expand(1, T, 8).contiguous()
    x = e.run(state, c, lpc=lpc, generator=torch.Generator().manual_seed(0))
    assert x[0, :4].abs().max().item() > 0.5  # it starts from the saturated history
    assert x[0, -400:].abs().max().item() < 1e-2  # and dies away


# ---- the gaussian, mog and mulaw heads ------------------------------------------------------
@pytest.mark.parametrize("head", OTHER_HEADS)
def test_other_heads_teacher_forced_match_forward(head):
    model = tiny_model(11, head=head)
    B, F_ = 2, 4
    mel = _mel(F_, B)
    x = torch.rand(B, F_ * model.hop_length, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9
    with torch.no_grad():
        ref, c = model(x, mel), model.upsample(mel)
    e = IncrementalWaveNet(model)
    state = e.new_state(B)
    parts = [e.run(state, c[..., a:b], teacher=x[:, a:b], return_params=True)[1]
             for a, b in [(0, 1), (1, 100), (100, F_ * model.hop_length)]]
    got = torch.cat(parts, -1)
    assert got.shape == ref.shape == (B, model.head.out_channels, F_ * model.hop_length)
    assert (got - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("head", OTHER_HEADS)
def test_other_heads_free_running_feed_back_their_own_samples(head):
    """Free-running (temperature 0.7, scale temperature 0.8): sample t is ``head.sample`` of
    step t's parameters with the generator drawn in step order, and those parameters are what
    the network computes from the samples before it (so sample t fed step t + 1)."""
    model = tiny_model(12, head=head)
    B, F_ = 2, 4
    mel = _mel(F_, B, seed=3)
    with torch.no_grad():
        c = model.upsample(mel)
    e = IncrementalWaveNet(model)
    state, g = e.new_state(B), torch.Generator().manual_seed(6)
    kw = {"temperature": 0.7, "scale_temperature": 0.8}
    xs, ps = [], []
    for a, b in [(0, 7), (7, 150), (150, F_ * model.hop_length)]:
        x, p = e.run(state, c[..., a:b], generator=g, return_params=True, **kw)
        xs.append(x)
        ps.append(p)
    x, params = torch.cat(xs, -1), torch.cat(ps, -1)
    assert len(torch.unique(x)) > 100  # a varied signal, not a fixed point
    g = torch.Generator().manual_seed(6)
    want = torch.cat([model.head.sample(params[..., t:t + 1], generator=g, **kw)
                      for t in range(x.shape[1])], -1)
    torch.testing.assert_close(x, want.float(), rtol=0, atol=1e-6)
    with torch.no_grad():
        ref = model(x, mel)
    assert (params - ref).abs().max().item() < 1e-4
    # the public entry point: the same seed, the same audio
    a = synthesize_incremental(model, random_mel(3), seed=1, backend="torch")
    b = synthesize_incremental(model, random_mel(3), seed=1, backend="torch")
    c2 = synthesize_incremental(model, random_mel(3), seed=2, backend="torch")
    assert np.array_equal(a, b) and not np.array_equal(a, c2) and np.abs(a).max() <= 1.0


@pytest.mark.parametrize("head", OTHER_HEADS)
def test_other_heads_streaming_equals_offline(head):
    model = tiny_model(13, head=head)
    mel = random_mel(8, seed=4)
    offline = synthesize_incremental(model, mel, seed=4)  # "auto": eager torch for these heads
    stream = StreamingVocoder(model, seed=4)
    assert stream.engine.backend == "torch"
    got = [stream.push(mel[a:b]) for a, b in [(0, 3), (3, 4), (4, 8)]] + [stream.flush()]
    assert np.array_equal(np.concatenate(got), offline)


# ---- the traced "compile" backend -----------------------------------------------------------
def test_compile_backend_traces_and_matches_torch():
    """One torch.compile of the sampling step (batch 1: the product + sum form): the same
    samples as eager torch from the same noise, parameters equal to the network's."""
    model = tiny_model(14)
    F_ = 3
    mel = _mel(F_, seed=5)
    with torch.no_grad():
        c = model.upsample(mel)
    outs = []
    for backend in ("torch", "compile"):
        e = IncrementalWaveNet(model, backend=backend)
        noise = e.draw_noise(F_ * model.hop_length, 1, generator=torch.Generator().manual_seed(3))
        outs.append(e.run(e.new_state(1), c, noise=noise, return_params=True))
    assert len(e._compiled) == 1  # the compiled step ran (not the eager fallback)
    (x0, p0), (x1, p1) = outs
    assert (x0 - x1).abs().max().item() < 1e-5 and (p0 - p1).abs().max().item() < 1e-4
    with torch.no_grad():
        assert (p1 - model(x1, mel)).abs().max().item() < 1e-4


# ---- temperatures against the pmf -----------------------------------------------------------
@pytest.mark.parametrize("tau, st", [(0.5, 1.0), (2.0, 0.5)])
def test_fused_noise_temperatures_follow_the_tempered_pmf(tau, st):
    """draw_noise + sample_mol at temperature tau and scale temperature st draw from the
    mixture with logits / tau and scales * st (chi-square over 64 bins); the mixture with
    logits * tau (a temperature that multiplies) is rejected."""
    K, N = 64, 40_000
    logits = torch.tensor([0.0, 1.0, 2.0, -0.5])
    means = torch.tensor([-0.6, -0.1, 0.3, 0.7])
    log_s = torch.tensor([-2.5, -3.0, -2.8, -3.2])
    y = torch.cat([logits, means, log_s])[None]
    e = IncrementalWaveNet(tiny_model())
    noise = e.draw_noise(N, 1, generator=torch.Generator().manual_seed(0), temperature=tau,
                         scale_temperature=st)
    x = sample_mol(y.expand(N, -1), noise.gumbel[:, 0], noise.logistic[:, 0], -16.0)
    k = torch.round((x.double() + 1) * (K - 1) / 2).long()  # the bin of each draw

    def pmf(lg: torch.Tensor) -> torch.Tensor:
        d = DiscretizedLogisticMixture(lg, means, log_s + math.log(st), num_classes=K)
        return d.log_pmf().double().exp()

    assert chi2_pvalue(k, pmf(logits / tau)) > 1e-3
    assert chi2_pvalue(k, pmf(logits * tau)) < 1e-9


# ---- bfloat16, batches, threads -------------------------------------------------------------
def test_free_running_bfloat16(backend):
    """bfloat16 weights, free-running: each sample is the fused draw from that step's
    parameters, which are within 2e-2 of the float32 network run on the generated samples."""
    model = tiny_model(15)
    F_ = 4
    T = F_ * model.hop_length
    mel = _mel(F_, seed=6)
    with torch.no_grad():
        c = model.upsample(mel)
    e = IncrementalWaveNet(model, backend=backend, dtype=torch.bfloat16)
    noise = e.draw_noise(T, 1, generator=torch.Generator().manual_seed(4))
    state = e.new_state(1)
    x, params = e.run(state, c, noise=noise, return_params=True)
    assert state.t == T and torch.isfinite(x).all() and x.abs().max().item() > 0.01
    drawn = sample_mol(params[0].T, noise.gumbel[:, 0], noise.logistic[:, 0], e.log_scale_min)
    assert (drawn - x[0]).abs().max().item() < 1e-5
    with torch.no_grad():
        err = (params - model(x, mel)).abs().max().item()
    assert 0 < err < 2e-2


def test_batched_cpp_with_threads_matches_torch(cpp):
    """B = 5 streams on 2 threads (split by streams; one thread gets 3, one 2): the same
    samples and parameters as eager torch from the same noise, for both tap layouts."""
    model = tiny_model(16)
    B, F_ = 5, 3
    mel = _mel(F_, B, seed=7)
    with torch.no_grad():
        c = model.upsample(mel)
    for amortize in (True, False):
        outs = []
        for backend, threads in (("torch", 1), ("cpp", 2)):
            e = IncrementalWaveNet(model, backend=backend, threads=threads, amortize=amortize)
            noise = e.draw_noise(F_ * model.hop_length, B,
                                 generator=torch.Generator().manual_seed(5))
            outs.append(e.run(e.new_state(B), c, noise=noise, return_params=True))
        (x0, p0), (x1, p1) = outs
        assert (x0 - x1).abs().max().item() < 1e-5, amortize
        assert (p0 - p1).abs().max().item() < 1e-4, amortize
        assert not torch.equal(x1[0], x1[1])  # the streams differ (their own mels and noise)


# ---- int8 weights (the C++ kernel) ----------------------------------------------------------
def _int8_params(model, c, x, threads=1, amortize=True, lpc=None):
    e = IncrementalWaveNet(model, backend="cpp", dtype=torch.int8, threads=threads,
                           amortize=amortize)
    state = e.new_state(x.shape[0])
    return e.run(state, c, teacher=x, return_params=True, lpc=lpc)[1]


@pytest.mark.parametrize("amortize", [True, False])
def test_int8_weights_close(cpp, amortize):
    """int8 weights and 8-bit rows (integer sums): teacher-forced, close to the float32 network
    and not equal to it, whatever the split of the work. The integer arithmetic is the same on
    every machine, so the bound is tight: correct 8-bit products are off by 5.0e-4 on average
    here (3.1e-3 at most); taking the offset 128 out with 127 instead gives 7.5e-4."""
    model = tiny_model(21)
    B, F_ = 3, 6
    mel = _mel(F_, B, seed=9)
    x = torch.rand(B, F_ * model.hop_length, generator=torch.Generator().manual_seed(6)) - 0.5
    with torch.no_grad():
        ref, c = model(x, mel), model.upsample(mel)
    got = _int8_params(model, c, x, amortize=amortize)
    err = (got - ref).abs()
    assert 0 < err.max().item() < 5e-3 and err.mean().item() < 6e-4
    # every split of the work gives the same numbers: by columns (batch 1, 3 threads on one
    # stream's products) and by streams (3 streams, 2 threads)
    assert torch.equal(_int8_params(model, c, x, threads=2, amortize=amortize), got)
    one = _int8_params(model, c[:1], x[:1], amortize=amortize)
    assert torch.equal(_int8_params(model, c[:1], x[:1], threads=3, amortize=amortize), one)
    assert torch.equal(one, got[:1])  # a stream's numbers do not depend on its batch


def test_int8_native_equals_portable(monkeypatch):
    """The native kernel's int8 products (vpdpbusd tiles, 4 panels per row at batch 1) against
    the portable integer loop: the sums are exact integers and each is scaled by one fma, so
    the two agree to the float rounding of the rest of the step (the native sigmoid's
    vectorized exp), as the float32 builds do; a wrong panel layout would be off by far more."""
    from dmol.wavenet.incremental import _load_kernel

    model = tiny_model(22)
    mel = _mel(5, 2, seed=10)
    x = torch.rand(2, 5 * model.hop_length, generator=torch.Generator().manual_seed(7)) - 0.5
    with torch.no_grad():
        c = model.upsample(mel)
    out = {}
    for variant in ("0", "1"):
        monkeypatch.setenv("DMOL_PORTABLE_KERNEL", variant)
        _load_kernel()
        out[variant] = [_int8_params(model, c[:b], x[:b]) for b in (1, 2)]
    for native, portable in zip(out["0"], out["1"], strict=True):
        assert (native - portable).abs().max().item() < 1e-5


def test_int8_lp_model_close_and_free_running(cpp):
    """An LP model with int8 weights: teacher-forced close to model.forward (mean error 3.5e-4
    measured; 8.7e-4 with the offset taken out wrongly) and the prediction channel exactly (it
    is float32 arithmetic on the true past); free-running, each sample is the fused draw from
    that step's parameters plus the prediction."""
    model, x, ref, c, lpc = _lp_case(23, 6, mel_seed=3, x_seed=8)
    got = _int8_params(model, c, x, lpc=lpc)
    err = (got - ref).abs()
    assert 0 < err.max().item() < 5e-3 and err.mean().item() < 5e-4
    assert (got[:, -1] - ref[:, -1]).abs().max().item() < 1e-5
    e = IncrementalWaveNet(model, backend="cpp", dtype=torch.int8)
    noise = e.draw_noise(x.shape[1], 1, generator=torch.Generator().manual_seed(9))
    xs, p = e.run(e.new_state(1), c, noise=noise, lpc=lpc, return_params=True)
    C = model.head.net_channels
    drawn = sample_mol(p[0, :C].T, noise.gumbel[:, 0], noise.logistic[:, 0], e.log_scale_min)
    assert (drawn + p[0, C] - xs[0]).abs().max().item() < 1e-5
    assert xs.abs().max().item() > 0.01


def test_int8_needs_the_cpp_backend():
    model = tiny_model(24)
    with pytest.raises(ValueError, match="int8 weights need backend 'cpp'"):
        IncrementalWaveNet(model, backend="torch", dtype=torch.int8)
    with pytest.raises(ValueError, match="dtype must be one of"):
        make_engine(model, dtype="int4")
    with pytest.raises(ValueError, match="int8 weights run on the C\\+\\+ kernel only"):
        make_engine(model, dtype="int8", backend="compile")
    with pytest.raises(ValueError, match="int8 weights need the C\\+\\+ kernel"):
        make_engine(tiny_model(24, head="gaussian"), dtype="int8")  # no cpp engine for it


# ---- the streaming mel buffer ---------------------------------------------------------------
def test_streaming_trims_its_mel_buffer_and_stays_exact():
    """Past ~64 frames the stream drops mel frames no window reads any more; its audio still
    equals the engine run once over the whole utterance's conditioning, with the same noise,
    and the model's conditioning matters (another mel there changes that frame's audio)."""
    model = tiny_model(17)
    F_, hop = 100, model.hop_length
    mel = random_mel(F_, seed=8)
    stream = StreamingVocoder(model, seed=9)
    la = stream.lookahead
    got = [stream.push(mel[a:a + 7]) for a in range(0, F_, 7)] + [stream.flush()]
    assert stream._offset > 0 and stream._mel.shape[-1] < F_ - 64  # it did trim
    streamed = np.concatenate(got)
    # the reference: no windows, no trimming; the stream's noise (one draw per frame)
    e = make_engine(model)
    g = torch.Generator().manual_seed(9)
    noise = [e.draw_noise(hop, 1, generator=g) for _ in range(F_)]
    gumbel = torch.cat([n.gumbel for n in noise])
    logistic = torch.cat([n.logistic for n in noise])
    with torch.no_grad():
        c = model.upsample(torch.from_numpy(mel).T[None])
    ref = e.run(e.new_state(1), c, noise=type(noise[0])(gumbel, logistic))[0].numpy()
    assert np.abs(streamed - ref).max() < 1e-4
    # conditioning in use: another frame 90 changes its audio, and nothing before its window
    mel2 = mel.copy()
    mel2[90] += 2.0
    other = synthesize_incremental(model, mel2, seed=9)
    assert np.abs(other[90 * hop:91 * hop] - streamed[90 * hop:91 * hop]).max() > 1e-3
    assert np.array_equal(other[:(90 - la - 1) * hop], streamed[:(90 - la - 1) * hop])
