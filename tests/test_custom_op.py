"""dmol::mol_nll and dmol::mol_sample as PyTorch operators: inside torch.compile (a whole training
step), under torch.func, and torch.library's own consistency checks (schema, fake tensors,
autograd registration). Numbers are compared with the eager calls of the same functions."""

import pytest
import torch

from dmol import fused
from dmol.logistic import discretized_mix_logistic_loss, sample_discretized_mix_logistic

K, LSM, M = 256, -7.0, 3


def _data(B=2, T=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, T, generator=g)
    y = torch.randint(0, K, (B, T), generator=g) * (2.0 / (K - 1)) - 1.0
    return x, y


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv1d(4, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv1d(8, 3 * M, 1)
    )


def _train_step(model, x, y):
    loss = discretized_mix_logistic_loss(model(x), y, num_classes=K, log_scale_min=LSM)
    loss.backward()
    return loss.detach()


def test_compiled_training_step_matches_eager():
    """model + dmol loss + backward, wrapped whole in torch.compile (dynamo + AOTAutograd;
    inductor's code generation for the model's own layers is left to the next test, for the
    suite's time): three SGD steps give the same losses and weights as eager (the loss is one
    opaque node; its registered backward runs in the compiled backward graph)."""
    eager, compiled = _model(), _model()
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.1)
    opt_c = torch.optim.SGD(compiled.parameters(), lr=0.1)
    step = torch.compile(_train_step, backend="aot_eager")
    for i in range(3):
        x, y = _data(seed=i)
        for opt in (opt_e, opt_c):
            opt.zero_grad(set_to_none=True)
        le = _train_step(eager, x, y)
        lc = step(compiled, x, y)
        opt_e.step()
        opt_c.step()
        torch.testing.assert_close(lc, le, rtol=1e-5, atol=1e-6)
    for pe, pc in zip(eager.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(pc, pe, rtol=1e-5, atol=1e-6)


def test_loss_and_backward_under_inductor():
    """The default backend: the op as an extern kernel in inductor's code, loss and gradient
    (with loc) as eager."""
    def loss_fn(y_hat, y, loc):
        return discretized_mix_logistic_loss(y_hat, y, num_classes=K, log_scale_min=LSM,
                                             loc=loc) * 2.0

    x, y = _data()
    y_hat = torch.randn(2, 3 * M, x.shape[-1])
    loc = torch.randn(y.shape) * 0.01
    leaves_e = [y_hat.clone().requires_grad_(), loc.clone().requires_grad_()]
    leaves_c = [y_hat.clone().requires_grad_(), loc.clone().requires_grad_()]
    le = loss_fn(leaves_e[0], y, leaves_e[1])
    lc = torch.compile(loss_fn)(leaves_c[0], y, leaves_c[1])
    torch.testing.assert_close(lc, le, rtol=1e-6, atol=0)
    for a, b in zip(torch.autograd.grad(lc, leaves_c), torch.autograd.grad(le, leaves_e),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_loss_is_one_node_in_a_full_graph_for_every_size():
    """fullgraph=True: no graph break anywhere in the packed loss; new batch sizes and lengths
    reuse the (dynamic) graph, and forward and gradient match eager."""
    counts = {"frames": 0}

    def counting_backend(gm, inputs):
        counts["frames"] += 1
        return gm

    def loss_fn(y_hat, y, loc):
        nll = fused.mixture_nll_packed(y_hat.transpose(1, 2), y, K, LSM, loc=loc,
                                       grad_scale=1.0 / y.numel())
        return nll.mean()

    compiled = torch.compile(loss_fn, fullgraph=True, dynamic=True, backend="aot_eager")
    for B, T in [(2, 16), (3, 40), (1, 7)]:
        g = torch.Generator().manual_seed(B * T)
        y_hat = torch.randn(B, 3 * M, T, generator=g)
        y = torch.rand(B, T, generator=g) * 2 - 1
        loc = torch.randn(B, T, generator=g) * 0.01
        leaves_e = [y_hat.clone().requires_grad_(), loc.clone().requires_grad_()]
        leaves_c = [y_hat.clone().requires_grad_(), loc.clone().requires_grad_()]
        le = loss_fn(leaves_e[0], y, leaves_e[1])
        lc = compiled(leaves_c[0], y, leaves_c[1])
        torch.testing.assert_close(lc, le, rtol=1e-6, atol=0)
        ge = torch.autograd.grad(le, leaves_e)
        gc = torch.autograd.grad(lc, leaves_c)
        for a, b in zip(gc, ge, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    compiled_once = torch.compile(loss_fn, fullgraph=True, dynamic=True, backend=counting_backend)
    for B, T in [(2, 16), (3, 40), (5, 9)]:
        compiled_once(torch.randn(B, 3 * M, T), torch.zeros(B, T), torch.zeros(B, T))
    assert counts["frames"] == 1  # one graph serves every shape


def test_func_grad_matches_autograd():
    g = torch.Generator().manual_seed(1)
    B, T = 2, 30
    params = torch.randn(B, T, 3 * M, generator=g)
    y = torch.rand(B, T, generator=g) * 2 - 1
    loc = torch.randn(B, T, generator=g) * 0.05
    w = torch.rand(B, T, generator=g)  # a weighted sum: an incoming gradient that is not 1

    def loss(p, shift):
        return (fused.mixture_nll_packed(p, y, K, LSM, loc=shift) * w).sum()

    gp, gl = torch.func.grad(loss, argnums=(0, 1))(params, loc)
    leaves = [params.clone().requires_grad_(), loc.clone().requires_grad_()]
    rp, rl = torch.autograd.grad(loss(*leaves), leaves)
    torch.testing.assert_close(gp, rp, rtol=0, atol=0)
    torch.testing.assert_close(gl, rl, rtol=0, atol=0)
    # the three-tensor entry point and recompute=True, too
    lg, mu, ls = params.chunk(3, -1)
    got = torch.func.grad(lambda m: fused.mixture_nll(lg, m, ls, y, K, LSM,
                                                      recompute=True).sum())(mu)
    leaf = mu.clone().requires_grad_()
    (want,) = torch.autograd.grad(fused.mixture_nll(lg, leaf, ls, y, K, LSM).sum(), [leaf])
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_sampler_inside_torch_compile_matches_eager():
    y_hat = torch.randn(2, 3 * M, 50)

    def draw(y_hat, seed):
        g = torch.Generator().manual_seed(seed)
        return sample_discretized_mix_logistic(y_hat, num_classes=K, log_scale_min=LSM,
                                               generator=g)

    compiled = torch.compile(draw, backend="aot_eager")
    for seed in (0, 1):
        torch.testing.assert_close(compiled(y_hat, seed), draw(y_hat, seed), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dtype):
    """torch.library.opcheck: schema, fake (meta) implementation, autograd registration and
    AOT dispatch, on the CPU kernels."""
    g = torch.Generator().manual_seed(2)
    A, T = 2, 9
    p = torch.randn(A, 3 * M, T, generator=g, dtype=dtype, requires_grad=True)
    y = (torch.rand(A, T, generator=g, dtype=dtype) * 2 - 1)
    loc = torch.zeros(A, T, dtype=dtype, requires_grad=True)
    torch.library.opcheck(torch.ops.dmol.mol_nll.default, (p, y, loc, K, LSM, 1.0, True))
    torch.library.opcheck(torch.ops.dmol.mol_nll.default, (p, y, loc, K, LSM, 0.5, False))
    u = torch.rand(2, A, T, generator=g, dtype=dtype)
    torch.library.opcheck(torch.ops.dmol.mol_sample.default,
                          (p.detach(), u, loc.detach(), 1.0, 0.0, LSM))


def test_coupled_operator_opcheck_and_func_grad():
    """dmol::coupled_nll (the PixelCNN++ head): torch.library's checks, torch.func.grad ==
    autograd, and a full graph under torch.compile with eager numbers."""
    from dmol.coupled import coupled_mix_logistic_loss

    g = torch.Generator().manual_seed(5)
    l = torch.randn(2, 20, 3, 4, generator=g)  # M = 2, C = 3
    x = torch.randint(0, 256, (2, 3, 3, 4), generator=g) * (2.0 / 255) - 1
    lf = l.reshape(2, 20, 12).requires_grad_()
    torch.library.opcheck(torch.ops.dmol.coupled_nll.default,
                          (lf, x.reshape(2, 3, 12), 256, -7.0, 1.0, True))

    def loss(l):
        return coupled_mix_logistic_loss(x, l)

    got = torch.func.grad(loss)(l)
    leaf = l.clone().requires_grad_()
    (want,) = torch.autograd.grad(loss(leaf), [leaf])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    leaf_c = l.clone().requires_grad_()
    lc = compiled(leaf_c)
    torch.testing.assert_close(lc, loss(l), rtol=1e-6, atol=0)
    (gc,) = torch.autograd.grad(lc, [leaf_c])
    torch.testing.assert_close(gc, want, rtol=1e-5, atol=1e-8)
