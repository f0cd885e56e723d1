"""Draw the figures of docs/gaussian_mulaw.md and compute the numbers it quotes, with dmol's code.

    python docs/scripts/gaussian_figures.py                    # docs/figures/{gaussian,mulaw}_*.png
    python docs/scripts/gaussian_figures.py --out /tmp/f --doc ""   # figures only, elsewhere

Deterministic (no randomness; float64 wherever float32 is not the point) and quick (seconds).
The numbers go into docs/gaussian_mulaw.md between the ``<!-- gaussian_figures:... -->`` markers.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import special  # noqa: E402

from dmol.gaussian import (  # noqa: E402
    DiscretizedGaussianMixture,
    MixtureOfGaussians,
    discretized_gaussian_mixture_nll,
)
from dmol.logistic import bin_centre  # noqa: E402
from dmol.mulaw import (  # noqa: E402
    inv_mulaw_quantize,
    mulaw_decode,
    mulaw_encode,
    mulaw_quantize,
)

ROOT = Path(__file__).resolve().parents[2]
F64 = torch.float64
DPI = 90
BLUE, ORANGE, GREEN, RED, GREY = "C0", "C1", "C2", "C3", "0.5"
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def one(mean: float, log_scale: float, dtype=F64) -> tuple[torch.Tensor, ...]:
    """Parameters of a single Gaussian, batch shape ()."""
    return tuple(torch.tensor([v], dtype=dtype) for v in (0.0, mean, log_scale))


def save(fig, out: Path, name: str) -> Path:
    fig.tight_layout()
    path = out / name
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


# -- figures ----------------------------------------------------------------------------------


def fig_density(out: Path) -> Path:
    """A density above 1 (negative NLL) next to the discretized NLL, which never goes below 0."""
    x = torch.linspace(-1, 1, 801, dtype=F64)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    for s, col in ((0.5, BLUE), (0.2, ORANGE), (0.05, GREEN)):
        d = MixtureOfGaussians(*one(0.0, math.log(s)))
        a1.plot(x.numpy(), d.log_prob(x).exp().numpy(), color=col,
                label=f"s = {s}: peak {1 / (s * math.sqrt(2 * math.pi)):.2f}, "
                      f"NLL at 0 = {float(-d.log_prob(torch.tensor(0.0, dtype=F64))):.2f}")
    a1.axhline(1.0, color=GREY, lw=0.8, ls="--")
    a1.set(title="Gaussian densities; above the dashed line NLL < 0", xlabel="x",
           ylabel="density")
    a1.legend(fontsize=8)

    ls = torch.linspace(-12, 1, 261, dtype=F64)
    cont = ls + LOG_SQRT_2PI  # -log N(mu | mu, s)
    a2.plot(ls.numpy(), cont.numpy(), color=RED, label="continuous: -log density at the mean")
    for K, col in ((256, BLUE), (65536, GREEN)):
        c = bin_centre(torch.tensor(K // 2), K, F64)  # mean and target on one bin centre
        nll = torch.stack([
            discretized_gaussian_mixture_nll(*one(float(c), float(v)), c, K) for v in ls
        ])
        a2.plot(ls.numpy(), nll.numpy(), color=col,
                label=f"discretized, K = {K}: -log P(bin of the mean)")
        a2.plot(ls.numpy(), (cont - math.log(2 / (K - 1))).numpy(), ":", color=col, lw=1,
                label=f"continuous - log(bin width), K = {K}")
    a2.axhline(0.0, color=GREY, lw=0.8, ls="--")
    a2.set(title="NLL of a target on the mean vs log-scale", xlabel="log-scale", ylabel="nats",
           ylim=(-14, 14))
    a2.legend(fontsize=7, loc="upper left")
    return save(fig, out, "gaussian_density.png")


def _scipy_log_mass(mean: float, log_scale: float, k: np.ndarray, K: int) -> np.ndarray:
    """float64 reference, interior bins: scipy's log_ndtr on the tail side, log-diff-exp."""
    h, s = 1.0 / (K - 1), math.exp(log_scale)
    c = 2.0 * k / (K - 1) - 1.0
    a, b = (c - h - mean) / s, (c + h - mean) / s
    lo, hi = np.where(a > 0, -b, a), np.where(a > 0, -a, b)
    l_hi, l_lo = special.log_ndtr(hi), special.log_ndtr(lo)
    return l_hi + np.log(-np.expm1(l_lo - l_hi))


def fig_bin_mass_error(out: Path) -> Path:
    """Relative error of one bin's log-mass in float32: CDF difference vs dmol."""
    cases = ((65536, -4.0), (256, -4.0))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), sharey=True)
    for ax, (K, ls) in zip(axes, cases, strict=True):
        mean = -0.2
        s = math.exp(ls)
        # bins from the mean out to ~40 scales to the right
        centre = float(bin_centre(torch.tensor(int(round((mean + 1) * (K - 1) / 2))), K, F64))
        steps = np.unique(np.round(np.geomspace(1, 40 * s * (K - 1) / 2, 300)).astype(np.int64))
        k = int(round((centre + 1) * (K - 1) / 2)) + steps
        k = k[k < K - 1]
        z = (2.0 * k / (K - 1) - 1.0 - mean) / s
        want = _scipy_log_mass(mean, ls, k.astype(np.float64), K)
        # the textbook way in float32: log(Phi(b) - Phi(a))
        c32 = bin_centre(torch.from_numpy(k), K, torch.float32)
        h = 1.0 / (K - 1)
        a = (c32 - h - mean) / s
        b = (c32 + h - mean) / s
        naive = torch.log(torch.special.ndtr(b) - torch.special.ndtr(a)).double().numpy()
        dmol = -discretized_gaussian_mixture_nll(*one(mean, ls, torch.float32), c32, K)
        for got, col, name in ((naive, ORANGE, "log(ndtr(b) - ndtr(a)), float32"),
                               (dmol.double().numpy(), BLUE, "dmol, float32")):
            rel = np.abs(got - want) / np.abs(want)
            rel = np.where(np.isfinite(rel), rel, 1e3)  # -inf / NaN drawn at the top
            ax.semilogy(z, np.clip(rel, 1e-10, 1e3), color=col, lw=1, label=name)
        ax.axhline(np.finfo(np.float32).eps, color=GREY, lw=0.8, ls="--", label="float32 eps")
        ax.text(0.98, 0.9, "top line: -inf (mass rounded to 0)", transform=ax.transAxes,
                ha="right", fontsize=8, color=ORANGE)
        ax.set(title=f"K = {K}, log-scale {ls:g}", xlabel="bin centre - mean (scales)")
    axes[0].set_ylabel("relative error of log P(bin)")
    axes[0].legend(fontsize=8, loc="center right")
    return save(fig, out, "gaussian_bin_mass_error.png")


def fig_mulaw_companding(out: Path) -> Path:
    """The companding curve, and the waveform width of each class."""
    x = torch.linspace(-1, 1, 2001, dtype=F64)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    for mu, col in ((255, BLUE), (15, ORANGE)):
        a1.plot(x.numpy(), mulaw_encode(x, mu).numpy(), color=col, label=f"mu = {mu}")
    a1.plot([-1, 1], [-1, 1], color=GREY, lw=0.8, ls="--", label="identity")
    a1.set(title="f(x) = sign(x) log(1 + mu|x|) / log(1 + mu)", xlabel="waveform x",
           ylabel="companded f(x)")
    a1.legend(fontsize=8)

    mu = 255
    q = torch.arange(mu + 1, dtype=F64)
    grid = inv_mulaw_quantize(q, mu)
    # "round" classes are centred on the grid: their edges lie half a step away in f
    lo = mulaw_decode(torch.clamp(2 * (q - 0.5) / mu - 1, -1, 1), mu)
    hi = mulaw_decode(torch.clamp(2 * (q + 0.5) / mu - 1, -1, 1), mu)
    width = hi - lo
    a2.semilogy(grid.numpy(), width.numpy(), ".", color=BLUE, ms=3,
                label=f"mu-law, mu = {mu} (Q = {mu + 1})")
    a2.axhline(2 / 255, color=ORANGE, lw=1, label="uniform 8-bit grid (K = 256)")
    a2.axhline(2 / 65535, color=GREEN, lw=1, label="uniform 16-bit grid (K = 65536)")
    a2.set(title="waveform width of each class", xlabel="class value f^-1(2q/mu - 1)",
           ylabel="width")
    a2.legend(fontsize=8, loc="lower right")
    return save(fig, out, "mulaw_companding.png")


def fig_mulaw_quantization(out: Path) -> Path:
    """quantize then decode, "floor" (nnmnkwii) vs "round" (torchaudio), on a coarse grid."""
    mu = 15
    x = torch.linspace(-1, 1, 4001, dtype=F64)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    for rounding, col in (("floor", ORANGE), ("round", BLUE)):
        xr = inv_mulaw_quantize(mulaw_quantize(x, mu, rounding=rounding), mu)
        a1.plot(x.numpy(), xr.numpy(), color=col, lw=1.2, label=f'rounding="{rounding}"')
        a2.plot(x.numpy(), (mulaw_encode(xr, mu) - mulaw_encode(x, mu)).numpy() * mu / 2,
                color=col, lw=1.2, label=f'rounding="{rounding}"')
    grid = inv_mulaw_quantize(torch.arange(mu + 1), mu).double()
    a1.plot(grid.numpy(), grid.numpy(), "k.", ms=5, label="class values")
    a1.set(title=f"decode(quantize(x)), mu = {mu}", xlabel="x", ylabel="reconstruction")
    a1.legend(fontsize=8)
    a2.axhline(0, color=GREY, lw=0.8)
    a2.set(title="reconstruction error in companded steps", xlabel="x",
           ylabel="(f(x_hat) - f(x)) / step")
    a2.legend(fontsize=8)
    return save(fig, out, "mulaw_quantization.png")


FIGURES = (fig_density, fig_bin_mass_error, fig_mulaw_companding, fig_mulaw_quantization)


# -- numbers quoted in docs/gaussian_mulaw.md -------------------------------------------------


def nll_table_markdown() -> str:
    """NLL of a target on the mean, continuous vs discretized, for a few log-scales."""
    rows = [
        "| log-scale | density at the mean | continuous NLL | discretized NLL, K = 256 "
        "| K = 65536 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for ls in (1.0, -1.0, -3.0, -5.0, -7.0, -9.0):
        cont = MixtureOfGaussians(*one(0.0, ls))
        c_nll = float(-cont.log_prob(torch.tensor(0.0, dtype=F64)))
        disc = []
        for K in (256, 65536):
            c = bin_centre(torch.tensor(K // 2), K, F64)  # 0 is a bin edge: use a centre
            d = DiscretizedGaussianMixture(*one(float(c), ls), num_classes=K)
            disc.append(float(-d.log_prob(c)))
        rows.append(f"| {ls:g} | {math.exp(-c_nll):.4g} | {c_nll:.3f} | {disc[0]:.3f} "
                    f"| {disc[1]:.3f} |")
    return "\n".join(rows)


def mulaw_conventions_markdown() -> str:
    """Classes of a few waveform values under both conventions (mu = 255)."""
    mu = 255
    xs = torch.tensor([-1.0, -0.5, -0.01, 0.0, 0.001, 0.01, 0.5, 0.999, 1.0], dtype=F64)
    qf = mulaw_quantize(xs, mu, rounding="floor")
    qr = mulaw_quantize(xs, mu, rounding="round")
    rows = [
        "| x | f(x) * mu/2 + mu/2 | \"floor\" class (nnmnkwii) | decoded | \"round\" class "
        "(torchaudio) | decoded |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    v = (mulaw_encode(xs, mu) + 1) / 2 * mu
    for i, x in enumerate(xs.tolist()):
        rows.append(
            f"| {x:g} | {float(v[i]):.3f} | {int(qf[i])} "
            f"| {float(inv_mulaw_quantize(qf[i], mu)):.5f} | {int(qr[i])} "
            f"| {float(inv_mulaw_quantize(qr[i], mu)):.5f} |"
        )
    return "\n".join(rows)


def mulaw_widths_markdown() -> str:
    """Spacing of the mu = 255 class values near 0 and near full scale."""
    mu = 255
    grid = inv_mulaw_quantize(torch.arange(mu + 1), mu).double()
    gaps = grid.diff()
    return (
        f"With mu = {mu}, neighbouring class values are **{float(gaps.min()):.2e}** apart next "
        f"to 0 and **{float(gaps.max()):.3f}** apart next to ±1, a ratio of "
        f"{float(gaps.max() / gaps.min()):.0f}; a uniform 8-bit grid spaces every value "
        f"{2 / 255:.4f} apart."
    )


BLOCKS = {
    "nll-at-mean": nll_table_markdown,
    "mulaw-conventions": mulaw_conventions_markdown,
    "mulaw-widths": mulaw_widths_markdown,
}


def update_doc(doc: Path, block: str, name: str) -> None:
    """Replace the text between ``<!-- gaussian_figures:name -->`` and its closing marker."""
    text = doc.read_text()
    pattern = re.compile(
        rf"(<!-- gaussian_figures:{name} -->\n).*?(\n<!-- /gaussian_figures -->)", re.S
    )
    if not pattern.search(text):
        raise ValueError(f"{doc} has no '<!-- gaussian_figures:{name} -->' ... block")
    doc.write_text(pattern.sub(lambda m: m.group(1) + block + m.group(2), text))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures",
                    help="folder for the PNGs (default docs/figures)")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "gaussian_mulaw.md"),
                    help='markdown file whose marked blocks are rewritten ("" to skip)')
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for fig in FIGURES:
        print(f"wrote {fig(args.out)}")
    for name, make in BLOCKS.items():
        block = make()
        if args.doc:
            update_doc(Path(args.doc), block, name)
    if args.doc:
        print(f"updated {args.doc}")


if __name__ == "__main__":
    main()
