"""Draw the figures of docs/mol.md and compute the numbers it quotes, all with dmol's own code.

    python docs/scripts/mol_figures.py                     # docs/figures/mol_*.png + docs/mol.md
    python docs/scripts/mol_figures.py --out /tmp/f --doc ""   # figures only, elsewhere

Deterministic (fixed generators, float64 wherever float32 is not the point) and quick (seconds).
The numbers go into docs/mol.md between the ``<!-- mol_figures:... -->`` markers.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from dmol.logistic import (  # noqa: E402
    DiscretizedLogisticMixture,
    bin_centre,
    bin_index,
    discretized_mix_logistic_loss,
    mixture_nll_reference,
    sample_discretized_mix_logistic,
)

try:
    from dmol.compat import r9y9
except ImportError:  # the compat layer is optional for the docs
    r9y9 = None

ROOT = Path(__file__).resolve().parents[2]
F64 = torch.float64
DPI = 90
BLUE, ORANGE, GREEN, RED, GREY = "C0", "C1", "C2", "C3", "0.5"


def dlm(logits, means, log_scales, num_classes: int) -> DiscretizedLogisticMixture:
    """A distribution with batch shape () from plain lists (float64)."""
    t = [torch.tensor(v, dtype=F64) for v in (logits, means, log_scales)]
    return DiscretizedLogisticMixture(*t, num_classes=num_classes)


def y_hat_of(logits, means, log_scales, steps: int) -> torch.Tensor:
    """(1, 3M, steps) "BCT" network output repeating one set of parameters."""
    p = torch.tensor([*logits, *means, *log_scales], dtype=F64)
    return p[None, :, None].expand(1, -1, steps).contiguous()


def pmf(d: DiscretizedLogisticMixture) -> torch.Tensor:
    """All K bin masses; one chunk, as the batch here is a single distribution."""
    return d.log_pmf(chunk=d.num_classes).exp()


def centres(num_classes: int) -> torch.Tensor:
    return bin_centre(torch.arange(num_classes), num_classes, F64)


def logistic_pdf(x: torch.Tensor, mu: float, s: float) -> torch.Tensor:
    """Continuous logistic density, only to draw the curve the bins discretize."""
    z = (x - mu) / s
    return torch.sigmoid(z) * torch.sigmoid(-z) / s


def save(fig, out: Path, name: str) -> Path:
    fig.tight_layout()
    path = out / name
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


# -- figures ----------------------------------------------------------------------------------


def fig_logistic(out: Path) -> Path:
    """PDF and CDF of a logistic; dots: dmol's bin masses / bin width and dmol's CDF."""
    x = torch.linspace(-1, 1, 401, dtype=F64)
    K, mu = 41, 0.0
    c, width = centres(K), 2.0 / (K - 1)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for s, col in ((0.08, BLUE), (0.15, ORANGE), (0.3, GREEN)):
        a1.plot(x, logistic_pdf(x, mu, s).numpy(), color=col, label=f"s = {s}")
        a2.plot(x, torch.sigmoid((x - mu) / s).numpy(), color=col,
                label=f"sigmoid((x - mu)/s), s = {s}")
        d = dlm([0.0], [mu], [math.log(s)], K)
        inner = slice(1, K - 1)  # the edge bins hold tails, not a density
        a1.plot(c[inner], (pmf(d) / width)[inner].numpy(), ".", color=col, ms=4)
        a2.plot((c + width / 2).numpy(), d.cdf(c).numpy(), ".", color=col, ms=4)
    a1.set(title=f"PDF; dots: dmol bin mass / bin width (K = {K})", xlabel="x")
    a2.set(title="CDF = sigmoid; dots: dmol .cdf at bin upper edges", xlabel="x")
    a1.legend(fontsize=8)
    a2.legend(fontsize=8, loc="upper left")
    return save(fig, out, "mol_logistic.png")


def fig_bin_mass(out: Path) -> Path:
    """One interior bin: its mass is the area under the PDF = the jump of the CDF."""
    K, mu, s, k = 16, 0.1, 0.25, 9
    d = dlm([0.0], [mu], [math.log(s)], K)
    h = 1.0 / (K - 1)
    c = float(bin_centre(torch.tensor(k), K, F64))
    lo, hi = c - h, c + h
    mass = float(d.log_prob(torch.tensor(c, dtype=F64)).exp())
    cdf_lo = float(d.cdf(torch.tensor(c - 2 * h, dtype=F64)))  # CDF up to bin k-1 = at lo
    cdf_hi = float(d.cdf(torch.tensor(c, dtype=F64)))
    x = torch.linspace(-1.2, 1.2, 481, dtype=F64)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    a1.plot(x, logistic_pdf(x, mu, s).numpy(), color=BLUE)
    xb = torch.linspace(lo, hi, 50, dtype=F64)
    a1.fill_between(xb, logistic_pdf(xb, mu, s).numpy(), color=ORANGE, alpha=0.6,
                    label=f"bin {k}: [c - h, c + h], mass {mass:.4f}")
    for e in range(K + 1):
        a1.axvline(-1 - h + 2 * h * e, color=GREY, lw=0.4)
    a1.set(title=f"PDF, K = {K} bins of width 2/(K-1)", xlabel="x")
    a1.legend(fontsize=8, loc="upper left")
    a2.plot(x, torch.sigmoid((x - mu) / s).numpy(), color=BLUE)
    a2.hlines([cdf_lo, cdf_hi], -1.2, [lo, hi], colors=ORANGE, lw=0.8, ls="--")
    a2.annotate("", (hi, cdf_hi), (hi, cdf_lo), arrowprops={"arrowstyle": "<->", "color": RED})
    a2.text(hi + 0.04, (cdf_lo + cdf_hi) / 2, f"sigmoid(b) - sigmoid(a)\n= {cdf_hi - cdf_lo:.4f}",
            color=RED, fontsize=8, va="center")
    a2.set(title="CDF: the same mass as a difference", xlabel="x")
    return save(fig, out, "mol_bin_mass.png")


def r9y9_masses(mu: float, log_scale: float, num_classes: int) -> torch.Tensor | None:
    """exp(-loss) of r9y9's loss at every bin centre: what it treats as the bin masses."""
    if r9y9 is None:
        return None
    y = centres(num_classes)[None, :, None]
    nll = r9y9.discretized_mix_logistic_loss(
        y_hat_of([0.0], [mu], [log_scale], num_classes), y, num_classes=num_classes, reduce=False
    )
    return nll.neg().exp().flatten()


def fig_edge_bins(out: Path) -> Path:
    """Edge bins take the tails (K = 16); and what `y > 0.999` does to them at K = 65536."""
    K, mu, s = 16, 0.55, 0.25
    d = dlm([0.0], [mu], [math.log(s)], K)
    p, c, h = pmf(d), centres(K), 1.0 / (K - 1)
    x = torch.linspace(-1.6, 1.6, 641, dtype=F64)
    ncols = 2 if r9y9 is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(4.7 * ncols, 3.3), squeeze=False)
    a1 = axes[0, 0]
    colours = [RED if i in (0, K - 1) else BLUE for i in range(K)]
    a1.bar(c, p.numpy(), width=2 * h * 0.9, color=colours, alpha=0.7)
    a1.plot(x, (logistic_pdf(x, mu, s) * 2 * h).numpy(), color="k", lw=1, label="PDF x bin width")
    for sign in (-1, 1):
        t = x[(x * sign) > 1 - h]
        a1.fill_between(t.numpy(), (logistic_pdf(t, mu, s) * 2 * h).numpy(), color=RED, alpha=0.25)
    a1.set(title=f"K = {K}: edge bins (red) hold the tails; sum = {float(p.sum()):.6f}",
           xlabel="bin centre", ylabel="mass")
    a1.title.set_fontsize(9)
    a1.legend(fontsize=8, loc="upper left")
    if r9y9 is not None:
        K, mu, ls = 65536, 0.995, -5.0
        q = r9y9_masses(mu, ls, K)
        exact = pmf(dlm([0.0], [mu], [ls], K))
        n = 48
        k = (torch.arange(K - n, K) - (K - 1)).numpy()
        a2 = axes[0, 1]
        a2.semilogy(k, q[-n:].numpy(), "o", ms=3, color=ORANGE, label="r9y9 (y > 0.999)")
        a2.semilogy(k, exact[-n:].numpy(), ".", ms=3, color=BLUE, label="dmol (bin index)")
        nthr = int((centres(K) > 0.999).sum())
        a2.axvline(-nthr + 0.5, color=GREY, lw=0.8, ls="--")
        a2.set(title=f"K = 65536, mu = {mu}, log s = {ls}: top {nthr} bins",
               xlabel="k - (K - 1)", ylabel="mass")
        a2.title.set_fontsize(9)
        a2.legend(fontsize=8, loc="center left")
    return save(fig, out, "mol_edge_bins.png")


def fig_gumbel(out: Path) -> Path:
    """Gumbel-max component choice at three logit temperatures vs softmax(logits / T)."""
    logits = [1.0, 0.2, -0.5, 0.6, -1.2]
    M, n = len(logits), 20000
    means = [-0.8 + 0.4 * m for m in range(M)]
    # tiny scales: each draw lands on its component's mean, so the value names the component
    y_hat = y_hat_of(logits, means, [-30.0] * M, n)
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    w = 0.26
    for j, (t, col) in enumerate(((0.5, BLUE), (1.0, ORANGE), (2.0, GREEN))):
        g = torch.Generator().manual_seed(j)
        x = sample_discretized_mix_logistic(
            y_hat, log_scale_min=None, temperature=t, generator=g
        ).flatten()
        comp = torch.round((x + 0.8) / 0.4).long()
        freq = torch.bincount(comp, minlength=M).double() / n
        probs = torch.softmax(torch.tensor(logits, dtype=F64) / t, 0)
        pos = (torch.arange(M) + (j - 1) * w).numpy()
        ax.bar(pos, freq.numpy(), width=w, color=col, alpha=0.6, label=f"draws, temperature {t}")
        ax.plot(pos, probs.numpy(), "_", color="k", ms=12, mew=2)
    ax.plot([], [], "_", color="k", ms=12, mew=2, label="softmax(logits / T)")
    ax.set(xticks=range(M), xlabel="component m", ylabel="fraction",
           title=f"Gumbel-max: argmax(logits/T + G), {n} draws each")
    ax.legend(fontsize=8)
    return save(fig, out, "mol_gumbel.png")


def fig_inverse_cdf(out: Path) -> Path:
    """u ~ U(0,1) -> mu + s logit(u); dmol's draws follow that quantile and the density."""
    mu, s, n = 0.5, 0.15, 20000
    g = torch.Generator().manual_seed(0)
    x = sample_discretized_mix_logistic(
        y_hat_of([0.0], [mu], [math.log(s)], n), log_scale_min=None, generator=g
    ).flatten()
    u = torch.linspace(1e-4, 1 - 1e-4, 801, dtype=F64)
    q = mu + s * torch.logit(u)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    a1.plot(u.numpy(), q.numpy(), color=BLUE, label="quantile mu + s (log u - log(1 - u))")
    emp = x.sort().values
    levels = (torch.arange(n) + 0.5) / n
    a1.plot(levels[::200].numpy(), emp[::200].numpy(), ".", color=ORANGE, ms=4,
            label="dmol draws, sorted")
    a1.axhline(1.0, color=RED, lw=0.8, ls="--")
    for ui in (0.1, 0.5, 0.9):
        qi = mu + s * math.log(ui / (1 - ui))
        a1.annotate("", (ui, qi), (ui, -1.0), arrowprops={"arrowstyle": "->", "color": GREY})
        a1.annotate("", (0.0, qi), (ui, qi), arrowprops={"arrowstyle": "->", "color": GREY})
    a1.set(xlim=(0, 1), ylim=(-1, 1.6), xlabel="u", ylabel="x",
           title=f"inverse CDF, mu = {mu}, s = {s}")
    a1.legend(fontsize=8, loc="upper left")
    clipped = float((x >= 1.0).double().mean())
    a2.hist(x.numpy(), bins=80, range=(-1, 1), density=True, color=ORANGE, alpha=0.6,
            label=f"dmol draws (clipped at 1: {clipped:.1%})")
    t = torch.linspace(-1, 1, 401, dtype=F64)
    a2.plot(t.numpy(), logistic_pdf(t, mu, s).numpy(), color=BLUE, label="logistic PDF")
    a2.set(xlabel="x", title="histogram of the draws")
    a2.legend(fontsize=8, loc="upper left")
    return save(fig, out, "mol_inverse_cdf.png")


MIX = {"logits": [0.5, 0.0, -0.3], "means": [-0.3, 0.1, 0.55], "log_scales": [-2.0, -3.0, -2.6]}


def fig_mixture(out: Path) -> Path:
    """A 3-component mixture at K = 256: exact pmf, samples, mean, mode; temperatures."""
    K, n = 256, 50000
    d = dlm(MIX["logits"], MIX["means"], MIX["log_scales"], K)
    p, c = pmf(d), centres(K)
    k = d.sample((n,), generator=torch.Generator().manual_seed(0), return_bins=True)
    freq = torch.bincount(k, minlength=K).double() / n
    ent = float(d.entropy())
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    a1.bar(c, freq.numpy(), width=2 / (K - 1), color=ORANGE, alpha=0.6, label=f"{n} samples")
    a1.step(c, p.numpy(), where="mid", color=BLUE, lw=1, label=f"pmf (entropy {ent:.3f} nats)")
    a1.axvline(float(d.mean), color=GREEN, ls="--", label=f".mean = {float(d.mean):.3f}")
    a1.axvline(float(d.mode), color=RED, ls=":", label=f".mode = {float(d.mode):.3f}")
    a1.axvline(float(c[p.argmax()]), color="k", lw=0.6,
               label=f"pmf argmax = {float(c[p.argmax()]):.3f}")
    a1.set(title=f"M = 3, K = {K}", xlabel="y", ylabel="mass")
    a1.legend(fontsize=7, loc="upper left")
    for t, ts, col in ((1.0, 1.0, BLUE), (0.5, 1.0, ORANGE), (1.0, 0.5, GREEN)):
        pt = pmf(d.with_temperature(t, ts))
        a2.step(c, pt.numpy(), where="mid", color=col, lw=1,
                label=f"temperature {t}, scale_temperature {ts}")
    a2.set(title="with_temperature: logits / T, scales x T_s", xlabel="y")
    a2.legend(fontsize=7, loc="upper left")
    return save(fig, out, "mol_mixture.png")


def compat_errors(num_classes: int, z: float, log_scales: torch.Tensor, mu: float = 0.3):
    """|NLL - exact| at y = mu + z s (snapped) for r9y9 (float32, float64) and dmol (float32)."""
    y = bin_centre(bin_index((mu + z * log_scales.exp()).clamp(-1, 1), num_classes),
                   num_classes, F64)
    n = log_scales.numel()
    logits, means = torch.zeros(n, 1, dtype=F64), torch.full((n, 1), mu, dtype=F64)
    exact = mixture_nll_reference(logits, means, log_scales[:, None], y, num_classes)
    y_hat = torch.stack((logits[:, 0], means[:, 0], log_scales))[None]  # (1, 3, n)
    err = {}
    for dt in (torch.float32, torch.float64):
        nll = r9y9.discretized_mix_logistic_loss(
            y_hat.to(dt), y[None, :, None].to(dt), num_classes=num_classes, reduce=False
        )
        err[f"r9y9 {str(dt)[6:]}"] = (nll.flatten().double() - exact).abs()
    nll = discretized_mix_logistic_loss(
        y_hat.float(), y[None].float(), num_classes=num_classes, reduction="none"
    )
    err["dmol float32"] = (nll.flatten().double() - exact).abs()
    return err


def fig_compat_error(out: Path) -> Path | None:
    """Error of the classic formula vs the exact NLL as the log-scale shrinks."""
    if r9y9 is None:
        return None
    ls = torch.linspace(-7, 1, 321, dtype=F64)
    cases = ((65536, 3.0), (256, 10.0))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), sharey=True)
    for ax, (K, z) in zip(axes, cases, strict=True):
        for (name, e), col, st in zip(compat_errors(K, z, ls).items(), (ORANGE, RED, BLUE),
                                      ("-", "--", "-"), strict=True):
            ax.semilogy(ls.numpy(), e.clamp(min=1e-17).numpy(), st, color=col, lw=1, label=name)
        ax.set(title=f"K = {K}, y = mu + {z:g} s", xlabel="log-scale")
    axes[0].set_ylabel("|NLL - exact| (nats)")
    axes[0].legend(fontsize=8)
    return save(fig, out, "mol_compat_error.png")


FIGURES = (fig_logistic, fig_bin_mass, fig_edge_bins, fig_gumbel, fig_inverse_cdf, fig_mixture,
           fig_compat_error)


# -- numbers quoted in docs/mol.md ------------------------------------------------------------


def _excess(total: float) -> str:
    """A sum of masses, as its distance from 1 when small (rounding noise below 1e-12 is 1)."""
    diff = total - 1.0
    if abs(diff) < 1e-12:
        return "1 (to 1e-12)"
    if abs(diff) < 1e-3:
        return f"1 {'+' if diff > 0 else '-'} {abs(diff):.2g}"
    return f"**{total:.3g}**"


def r9y9_sums_markdown() -> str:
    """The summed bin masses at 16 bits, r9y9's thresholds vs dmol's bin index."""
    K = 65536
    nthr = int((centres(K) > 0.999).sum())
    rows = [
        f"Bins with centre above 0.999 at K = {K}: **{nthr}** (and as many below -0.999).",
        "",
        "| mean | log-scale | sum of r9y9 \"masses\" | sum of dmol masses |",
        "|---:|---:|---:|---:|",
    ]
    for mu, ls in ((0.0, -3.0), (0.0, -7.0), (0.99, -4.0), (0.995, -5.0), (0.999, -6.0)):
        ours = float(pmf(dlm([0.0], [mu], [ls], K)).sum())
        q = r9y9_masses(mu, ls, K)
        theirs = "n/a" if q is None else _excess(float(q.sum()))
        rows.append(f"| {mu:g} | {ls:g} | {theirs} | {_excess(ours)} |")
    return "\n".join(rows)


def clamp_floor_markdown(log_scale_min: float = -7.0) -> str:
    """The smallest loss a clamped log-scale allows: mean on the target's bin centre."""
    rows = [
        f"| K | smallest NLL at log_scale_min = {log_scale_min:g} (nats) | in bits |",
        "|---:|---:|---:|",
    ]
    for K in (256, 1024, 65536):
        y = centres(K)[K // 2 + 7].reshape(1, 1)
        y_hat = torch.stack((torch.zeros(()), y[0, 0], torch.tensor(-30.0, dtype=F64)))
        nll = float(discretized_mix_logistic_loss(
            y_hat.reshape(1, 3, 1), y, num_classes=K, log_scale_min=log_scale_min
        ))
        rows.append(f"| {K} | {nll:.4f} | {nll / math.log(2):.3f} |")
    return "\n".join(rows)


BLOCKS = {"r9y9-sums": r9y9_sums_markdown, "clamp-floor": clamp_floor_markdown}


def update_doc(doc: Path, block: str, name: str) -> None:
    """Replace the text between ``<!-- mol_figures:NAME -->`` and ``<!-- /mol_figures -->``."""
    text = doc.read_text()
    pattern = re.compile(rf"(<!-- mol_figures:{name} -->\n).*?(\n<!-- /mol_figures -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"{doc} has no '<!-- mol_figures:{name} -->' ... block")
    doc.write_text(pattern.sub(lambda m: m.group(1) + block + m.group(2), text))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures",
                    help="folder for the PNGs (default docs/figures)")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "mol.md"),
                    help="markdown file whose marked block receives the numbers ('' to skip)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)  # nothing should need it; belt and braces for determinism
    for f in FIGURES:
        path = f(args.out)
        if path is not None:
            print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    for name, make in BLOCKS.items():
        block = make()
        print(f"[{name}]\n{block}")
        if args.doc:
            update_doc(Path(args.doc), block, name)
    if args.doc:
        print(f"updated {args.doc}")


if __name__ == "__main__":
    main()
