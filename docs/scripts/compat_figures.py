"""Draw the figures of docs/compat.md and compute the numbers it quotes, with dmol's own code.

    python docs/scripts/compat_figures.py                       # docs/figures/compat_*.png
    python docs/scripts/compat_figures.py --out /tmp/f --doc ""  # figures only, elsewhere

Compares the drop-in ports (`dmol.compat.r9y9`, `dmol.compat.pixelcnn`) with the exact code
(`dmol.logistic`, `dmol.coupled`). Deterministic and quick (about ten seconds). The numbers go
into docs/compat.md between ``<!-- compat_figures:NAME -->`` and ``<!-- /compat_figures -->``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dmol.compat import pixelcnn, r9y9  # noqa: E402
from dmol.coupled import coupled_mix_logistic_loss  # noqa: E402
from dmol.logistic import (  # noqa: E402
    DiscretizedLogisticMixture,
    bin_centre,
    discretized_mix_logistic_loss,
    mixture_nll_reference,
)

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "data" / "r9y9_pixelcnn_vectors.npz"
F64 = torch.float64
DPI = 90
BLUE, ORANGE, GREEN, RED, GREY = "C0", "C1", "C2", "C3", "0.5"


def centres(num_classes: int) -> torch.Tensor:
    return bin_centre(torch.arange(num_classes), num_classes, F64)


def y_hat_of(means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """(1, 3, N) single-component network output, one (mean, log-scale) per time step."""
    return torch.stack((torch.zeros_like(means), means, log_scales))[None]


def compat_nll(means, log_scales, y, num_classes, dtype=F64) -> torch.Tensor:
    """r9y9's per-element loss (no log-scale clamp in the way: log_scale_min = -100)."""
    nll = r9y9.discretized_mix_logistic_loss(
        y_hat_of(means, log_scales).to(dtype),
        y[None, :, None].to(dtype),
        num_classes=num_classes,
        log_scale_min=-100.0,
        reduce=False,
    )
    return nll.flatten().double()


def exact_nll(means, log_scales, y, num_classes) -> torch.Tensor:
    """The exact per-element NLL, float64 (dmol.logistic's unfused reference)."""
    z = torch.zeros_like(means)[:, None]
    return mixture_nll_reference(z, means[:, None], log_scales[:, None], y, num_classes)


def save(fig, out: Path, name: str) -> Path:
    fig.tight_layout()
    path = out / name
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)
    return path


# -- edge bins by threshold -------------------------------------------------------------------


def compat_mass_sum(mu: float, log_scale: float, num_classes: int) -> float:
    """Sum over all K bin centres of exp(-compat loss): 1 for a normalized pmf."""
    y = centres(num_classes)
    n = y.numel()
    nll = compat_nll(
        torch.full((n,), mu, dtype=F64), torch.full((n,), log_scale, dtype=F64), y, num_classes
    )
    return float(nll.neg().exp().sum())


def exact_mass_sum(mu: float, log_scale: float, num_classes: int) -> float:
    t = [torch.tensor([v], dtype=F64) for v in (0.0, mu, log_scale)]
    return float(DiscretizedLogisticMixture(*t, num_classes=num_classes).log_pmf().exp().sum())


def fig_edge_bins(out: Path) -> Path:
    """K = 65536: total 'mass' vs mean near +1, and the loss of the top bins for mu > 1."""
    K = 65536
    c = centres(K)
    n_edge = int((c > 0.999).sum())
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    mus = np.linspace(0.97, 1.03, 31)
    for ls, col in zip((-7.0, -6.0, -5.0), (BLUE, ORANGE, GREEN), strict=True):
        a1.plot(
            mus,
            [compat_mass_sum(m, ls, K) for m in mus],
            color=col,
            lw=1.2,
            label=f"r9y9, log s = {ls:g}",
        )
    a1.axhline(exact_mass_sum(1.0, -6.0, K), color="k", lw=1, ls="--", label="dmol (any mean)")
    a1.axvline(0.999, color=GREY, lw=0.8, ls=":")
    a1.set(title="K = 65536: sum of all K bin masses", xlabel="mean", ylabel="sum of masses")
    a1.legend(fontsize=8)

    mu, ls = 1.02, -6.0
    idx = torch.arange(K - 60, K)
    y = c[idx]
    m, s = torch.full_like(y, mu), torch.full_like(y, ls)
    a2.plot(idx - (K - 1), compat_nll(m, s, y, K), "o", ms=3, color=ORANGE, label="r9y9")
    a2.plot(idx - (K - 1), exact_nll(m, s, y, K), ".", ms=3, color=BLUE, label="dmol (exact)")
    a2.axvline(-n_edge + 0.5, color=GREY, lw=0.8, ls="--")
    a2.set(
        title=f"mean {mu}, log s = {ls:g}: the top {n_edge} bins all cost ~0 nats",
        xlabel="k - (K - 1)",
        ylabel="NLL of the bin (nats)",
    )
    a2.title.set_fontsize(9)
    a2.legend(fontsize=8)
    return save(fig, out, "compat_edge_bins.png")


# -- the cdf_delta < 1e-5 fallback, and float32 cancellation ----------------------------------


def interior_errors(num_classes: int, log_scales: torch.Tensor) -> dict[str, np.ndarray]:
    """Per log-scale, the max |NLL - exact| over every bin with |centre| <= 0.999 (mean 0.3),
    split by the branch the compat formula takes."""
    c = centres(num_classes)
    y = c[c.abs() <= 0.999]
    L, N = log_scales.numel(), y.numel()
    yy = y.repeat(L)
    ss = log_scales.repeat_interleave(N)
    mm = torch.full_like(yy, 0.3)
    exact = exact_nll(mm, ss, yy, num_classes).view(L, N)
    h = 1.0 / (num_classes - 1)
    out = {}
    for dt, name in ((F64, "float64"), (torch.float32, "float32")):
        d, inv = (yy - mm).to(dt), torch.exp(-ss.to(dt))
        delta = torch.sigmoid(inv * (d + h)) - torch.sigmoid(inv * (d - h))
        fallback = (delta <= 1e-5).view(L, N)  # the branch the compat formula takes
        err = (compat_nll(mm, ss, yy, num_classes, dt).view(L, N) - exact).abs()
        out[f"r9y9 {name}, fallback bins"] = _masked_max(err, fallback)
        out[f"r9y9 {name}, cdf_delta bins"] = _masked_max(err, ~fallback)
    ours = (
        discretized_mix_logistic_loss(
            y_hat_of(mm, ss).float(),
            yy[None].float(),
            num_classes=num_classes,
            log_scale_min=None,
            reduction="none",
        )
        .flatten()
        .double()
    )
    out["dmol float32, all bins"] = (ours.view(L, N) - exact).abs().amax(1).numpy()
    # The floor for any float32 code: the exact loss itself rounded to float32.
    out["exact NLL rounded to float32"] = (exact.float().double() - exact).abs().amax(1).numpy()
    return out


def _masked_max(err: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Row-wise max of err over mask; NaN (a gap in the plot) where a row has no such bin."""
    top = torch.where(mask, err, -1.0).amax(1)
    return torch.where(top < 0, float("nan"), top).numpy()


def fig_fallback(out: Path) -> tuple[Path, dict]:
    ls = torch.linspace(-10, 1, 45, dtype=F64)
    cases = (256, 1024, 65536)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
    table = {}
    style = {
        "r9y9 float64, fallback bins": (RED, "-"),
        "r9y9 float32, cdf_delta bins": (ORANGE, "-"),
        "dmol float32, all bins": (BLUE, "-"),
        "exact NLL rounded to float32": (GREY, ":"),
    }
    for ax, K in zip(axes, cases, strict=True):
        errs = interior_errors(K, ls)
        table[K] = (ls.numpy(), errs)
        for name, (col, st) in style.items():
            ax.semilogy(ls, errs[name], st, color=col, lw=1.2, label=name)
        ax.axvline(-7, color=GREY, lw=0.8, ls=":")
        ax.set(title=f"K = {K} (mean 0.3, |y| <= 0.999)", xlabel="log-scale")
    axes[0].set_ylabel("max |NLL - exact| (nats)")
    axes[0].legend(fontsize=7, loc="lower left")
    return save(fig, out, "compat_fallback_error.png"), table


# -- float16 ----------------------------------------------------------------------------------


def fig_float16(out: Path) -> tuple[Path, float]:
    """Where r9y9's loss is NaN in float16 (K = 256, mean 0), vs dmol on the same inputs."""
    K = 256
    y = centres(K)
    ls = torch.linspace(-7, 2, 91, dtype=F64)
    L, N = ls.numel(), y.numel()
    yy, ss = y.repeat(L), ls.repeat_interleave(N)
    mm = torch.zeros_like(yy)
    compat = compat_nll(mm, ss, yy, K, torch.float16).view(L, N)
    ours = discretized_mix_logistic_loss(
        y_hat_of(mm, ss).half(), yy[None].half(), num_classes=K, reduction="none"
    ).view(L, N)
    frac = float(torch.isnan(compat).double().mean())
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.imshow(
        torch.isnan(compat).numpy(),
        origin="lower",
        aspect="auto",
        cmap="Reds",
        extent=(-1, 1, float(ls[0]), float(ls[-1])),
        vmin=0,
        vmax=1.4,
    )
    ax.set(
        title=f"r9y9 loss in float16 is NaN in the red area ({100 * frac:.0f}% of cells);"
        f"\ndmol: {int(torch.isnan(ours).sum())} NaN",
        xlabel="target y (mean 0)",
        ylabel="log-scale",
    )
    ax.title.set_fontsize(9)
    return save(fig, out, "compat_float16.png"), frac


# -- numbers ----------------------------------------------------------------------------------


def edge_markdown() -> str:
    K = 65536
    n_edge = int((centres(K) > 0.999).sum())
    rows = [
        f"Bins whose centre is above 0.999 at K = {K}: **{n_edge}** (as many below -0.999).",
        "",
        "| mean | log-scale | sum of the K r9y9 masses | sum of the K dmol masses |",
        "|---:|---:|---:|---:|",
    ]
    for mu, ls in ((0.0, -5.0), (0.99, -5.0), (0.998, -7.0), (1.02, -6.0)):
        rows.append(
            f"| {mu:g} | {ls:g} | {compat_mass_sum(mu, ls, K):.6g} | "
            f"{exact_mass_sum(mu, ls, K):.12f} |"
        )
    return "\n".join(rows)


def fallback_markdown(table: dict) -> str:
    names = (
        "r9y9 float64, fallback bins",
        "r9y9 float32, cdf_delta bins",
        "dmol float32, all bins",
        "exact NLL rounded to float32",
    )
    rows = [
        "| K | log-scale | r9y9 fallback bins (float64) | r9y9 cdf_delta bins (float32) "
        "| dmol (float32) | exact rounded to float32 |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for K, (ls, errs) in table.items():
        for want in (-7.0, -5.0, -3.0, 0.0):
            i = int(np.argmin(np.abs(ls - want)))
            cells = ("no such bin" if np.isnan(errs[n][i]) else f"{errs[n][i]:.2g}" for n in names)
            rows.append(f"| {K} | {ls[i]:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def float16_markdown(grid_frac: float) -> str:
    v = np.load(VECTORS)
    rows = [
        f"NaN share on the grid of the figure (K = 256, mean 0, log-scale -7..2): "
        f"**{100 * grid_frac:.1f}%**.",
        "",
        "| reference case | r9y9 NaN share in float16 | dmol NaN share in float16 |",
        "|---|---:|---:|",
    ]
    for case in ("dmol_K256_lsm7_M10", "dmol_K65536_lsm7_M10", "dmol_K65536_lsm7_M1"):
        K = int(case.split("_K")[1].split("_")[0])
        y_hat = torch.from_numpy(v[f"{case}_y_hat"]).half()
        y = torch.from_numpy(v[f"{case}_y"]).half()
        theirs = r9y9.discretized_mix_logistic_loss(y_hat, y, num_classes=K, reduce=False)
        ours = discretized_mix_logistic_loss(y_hat, y, num_classes=K, reduction="none")
        rows.append(
            f"| `{case}` | {100 * float(torch.isnan(theirs).float().mean()):.1f}% "
            f"| {100 * float(torch.isnan(ours).float().mean()):.1f}% |"
        )
    return "\n".join(rows)


def reduce_markdown() -> str:
    v = np.load(VECTORS)
    y_hat = torch.from_numpy(v["dmol_K256_lsm7_M10_y_hat"])
    y = torch.from_numpy(v["dmol_K256_lsm7_M10_y"])
    total = float(r9y9.discretized_mix_logistic_loss(y_hat, y))
    per = r9y9.discretized_mix_logistic_loss(y_hat, y, reduce=False)
    mean = float(discretized_mix_logistic_loss(y_hat, y[..., 0], num_classes=256))
    B, T = y.shape[:2]
    return (
        f"On `dmol_K256_lsm7_M10` (B = {B}, T = {T}): r9y9's `reduce=True` returns "
        f"**{total:.2f}** nats, B * T = {B * T} times its per-element mean "
        f'{float(per.mean()):.4f}; dmol\'s `reduction="mean"` returns **{mean:.4f}** nats.'
    )


def rgb_markdown() -> str:
    v = np.load(VECTORS)
    x, l = torch.from_numpy(v["rgb_M5_x"]), torch.from_numpy(v["rgb_M5_l"])
    ref = torch.from_numpy(v["rgb_M5_nll_per_image"])
    ours = coupled_mix_logistic_loss(x.double(), l.double(), reduction="none").sum((1, 2))
    port = torch.stack(
        [pixelcnn.discretized_mix_logistic_loss(x[i : i + 1], l[i : i + 1]) for i in range(len(x))]
    ).double()
    d_ours, d_port = (ours - ref).abs(), (port - ref).abs()
    return (
        f"On the 16 reference images `rgb_M5` (4x4, M = 5, totals "
        f"{float(ref.min()):.1f} to {float(ref.max()):.1f} nats): `dmol.compat.pixelcnn` "
        f"differs from the reference by at most **{float(d_port.max()):.2g}** nats "
        f"({float((d_port / ref).max()):.1g} relative); the exact "
        f"`dmol.coupled` by at most **{float(d_ours.max()):.2g}** nats "
        f"({float((d_ours / ref).max()):.1g} relative). No bin there has mass below 1e-5 "
        f"and the scales are >= e^-4.4, so what remains is float32 rounding."
    )


def update_doc(doc: Path, block: str, name: str) -> None:
    """Replace the text between ``<!-- compat_figures:NAME -->`` and the closing marker."""
    text = doc.read_text()
    pattern = re.compile(rf"(<!-- compat_figures:{name} -->\n).*?(<!-- /compat_figures -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"{doc} has no '<!-- compat_figures:{name} -->' ... block")
    doc.write_text(pattern.sub(lambda m: m.group(1) + block + "\n" + m.group(2), text))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "figures",
        help="folder for the PNGs (default docs/figures)",
    )
    ap.add_argument(
        "--doc",
        default=str(ROOT / "docs" / "compat.md"),
        help="markdown file whose marked blocks receive the numbers ('' to skip)",
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [fig_edge_bins(args.out)]
    path, table = fig_fallback(args.out)
    paths.append(path)
    path, frac = fig_float16(args.out)
    paths.append(path)
    for p in paths:
        print(f"wrote {p} ({p.stat().st_size // 1024} KB)")
    blocks = {
        "edge": edge_markdown(),
        "fallback": fallback_markdown(table),
        "float16": float16_markdown(frac),
        "reduce": reduce_markdown(),
        "rgb": rgb_markdown(),
    }
    for name, block in blocks.items():
        print(f"[{name}]\n{block}\n")
        if args.doc:
            update_doc(Path(args.doc), block, name)
    if args.doc:
        print(f"updated {args.doc}")


if __name__ == "__main__":
    main()
