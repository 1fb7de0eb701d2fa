"""matplotlib figures of the report. Each takes data and a path, writes a PNG, returns nothing."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str | Path, dpi: int) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _latent_axis(ax, dims, axis: str = "x", label: str = "latent dimension d") -> None:
    """An axis of latent dimensions (x by default): log2 scale, a tick at each swept d, a light grid."""
    getattr(ax, f"set_{axis}scale")("log", base=2)
    getattr(ax, f"set_{axis}ticks")(dims, [str(d) for d in dims])
    ax.minorticks_off()
    getattr(ax, f"set_{axis}label")(label)
    ax.grid(True, alpha=0.3)


def _band(ax, summary, col, color, label):
    """Mean over seeds as a line; with several seeds, the min-max range as a band and each seed as a dot."""
    x = summary["latent_dim"].to_numpy()
    ax.plot(x, summary[col], "o-", color=color, label=label, zorder=3)
    if summary["n_seeds"].max() > 1:
        ax.fill_between(x, summary[f"{col}_min"], summary[f"{col}_max"], color=color, alpha=0.2, label=f"{label}: range over seeds")


def bic_curve(table, summary, choice: dict, *, subtitle: str, path: str | Path, dpi: int = 120) -> None:
    """BIC (and AIC) against latent dimension, the minimum marked, and the held-out log-likelihood beside it;
    under the BIC curve, each d's bootstrap selection frequency as bars (when the table has it)."""
    freq = table.groupby("latent_dim")["selection_frequency"].first() if "selection_frequency" in table else None
    with_bars = freq is not None and freq.notna().all()
    fig = plt.figure(figsize=(12, 5.8 if with_bars else 4.6))
    grid = fig.add_gridspec(2 if with_bars else 1, 2, width_ratios=[3, 2], height_ratios=[3, 1] if with_bars else [1])
    ax, ax2 = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[:, 1])
    _band(ax, summary, "bic", "tab:blue", "BIC (mean over seeds)")
    if summary["n_seeds"].max() > 1:
        ax.scatter(table["latent_dim"], table["bic"], s=10, color="tab:blue", alpha=0.6, zorder=4)
    best = choice["best_latent_dim"]
    best_bic = float(summary.loc[summary.latent_dim == best, "bic"].iloc[0])
    ax.axvline(best, color="k", linestyle="--", linewidth=1)
    ax.plot(
        [best],
        [best_bic],
        marker="*",
        markersize=16,
        color="tab:red",
        zorder=5,
        label=f"selected: d = {best} (lowest {choice['criterion'].upper()})",
    )
    dims = summary["latent_dim"].to_numpy()
    _latent_axis(ax, dims)
    ax.set_ylabel("BIC = k ln n − 2 ln L̂   (lower is better)")
    ax.set_title("BIC curve: lower is better", loc="left")
    axr = ax.twinx()
    axr.plot(dims, summary["aic"], "s:", color="tab:gray", label="AIC = 2k − 2 ln L̂ (right axis)")
    axr.set_ylabel("AIC (lower is better)", color="tab:gray")
    lines = ax.get_legend_handles_labels()
    lines_r = axr.get_legend_handles_labels()
    ax.legend(lines[0] + lines_r[0], lines[1] + lines_r[1], fontsize=8, loc="best")

    _band(ax2, summary, "iwae_test", "tab:green", "test log p(x), IWAE estimate (mean over seeds)")
    ax2.plot(dims, summary["elbo_test"], "o--", color="tab:green", alpha=0.5, label="test ELBO (a looser bound)")
    ax2.axvline(best, color="k", linestyle="--", linewidth=1)
    _latent_axis(ax2, dims)
    ax2.set_ylabel("nats per example (higher is better)")
    ax2.set_title("held-out log-likelihood", loc="left")
    ax2.legend(fontsize=8, loc="lower right")
    if with_bars:
        axf = fig.add_subplot(grid[1, 0], sharex=ax)
        axf.bar(freq.index, freq.to_numpy(), width=np.asarray(freq.index) * 0.25, color="tab:blue", alpha=0.7)
        for d, f in freq.items():
            if f >= 0.005:
                axf.annotate(f"{100 * f:.0f}%", (d, f), ha="center", va="bottom", fontsize=7)
        _latent_axis(axf, dims)
        axf.set_ylim(0, 1.15)
        axf.set_ylabel("lowest BIC in\nshare of resamples", fontsize=8)
        ax.set_xlabel("")
    fig.suptitle(subtitle, fontsize=9, y=0.02, va="bottom")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


PICK_STYLES = {
    "bic": ("BIC", "tab:blue", "-"),
    "aic": ("AIC", "tab:gray", ":"),
    "heldout": ("held-out (validation estimate while training)", "tab:green", "--"),
}


def pick_vs_epoch(picks, table, choice: dict, *, subtitle: str, path: str | Path, dpi: int = 120) -> None:
    """Each criterion's pick had training been capped at epoch e (picks: pick_vs_epoch.csv as a
    DataFrame), with the epoch from which it held and, along the top, where each model stopped."""
    dims = sorted(table.latent_dim.unique().tolist())
    fig, ax = plt.subplots(figsize=(13, 4.6))
    for name, (label, color, style) in PICK_STYLES.items():
        if name not in picks or picks[name].isna().all():
            continue
        since = choice["pick_stable_since_epoch"].get(name)
        ax.step(
            picks["epoch"],
            picks[name],
            where="post",
            color=color,
            linestyle=style,
            linewidth=1.8,
            label=f"{label}: d = {int(picks[name].iloc[-1])} since epoch {since}",
        )
        if since:
            ax.axvline(since, color=color, linestyle=style, linewidth=0.8, alpha=0.7)
    for row in table.itertuples(index=False):  # where each model stopped: plateau (o) or cap (x, flagged)
        marker, color = ("o", "tab:purple") if row.stop_reason == "plateau" else ("x", "tab:red")
        ax.plot([row.epochs_run], [row.latent_dim], marker=marker, color=color, markersize=6, linestyle="none", alpha=0.8)
    ax.plot([], [], "o", color="tab:purple", label="a model stopped on its validation plateau (at d, epoch)")
    if (table.stop_reason == "cap").any():
        ax.plot([], [], "x", color="tab:red", label="a model reached the cap (train.epochs): not converged")
    _latent_axis(ax, dims, axis="y", label="latent dimension picked")
    ax.set_ylim(min(dims) / 1.3, max(dims) * 1.3)
    ax.set_xlabel("training capped at epoch e")
    ax.set_title("When the pick settled: each criterion's pick had training stopped at epoch e", loc="left")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(subtitle, fontsize=9, y=0.02, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def metric_curves(summary, *, subtitle: str, path: str | Path, dpi: int = 120) -> None:
    """Test ELBO, reconstruction term and KL against latent dimension: where the nats go."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    dims = summary["latent_dim"].to_numpy()
    panels = [
        ("elbo_test", "ELBO (higher is better)", "tab:green"),
        ("recon_test", "reconstruction −E_q[log p(x|z)] (lower is better)", "tab:orange"),
        ("kl_test", "KL(q(z|x) ‖ p(z))", "tab:purple"),
    ]
    for ax, (col, title, color) in zip(axes, panels):
        ax.plot(dims, summary[col], "o-", color=color, label="test")
        if col == "elbo_test":
            ax.plot(dims, summary["elbo_train"], "o--", color=color, alpha=0.5, label="train")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        _latent_axis(ax, dims)
        ax.set_ylabel("nats per example (mean over seeds)")
    fig.suptitle(subtitle, fontsize=9, y=0.02, va="bottom")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def latent_usage_figure(summary, kl_per_unit: dict, *, true_dim: int | None, subtitle: str, path: str | Path, dpi: int = 120) -> None:
    """Active units against latent dimension, and each model's per-unit KL sorted from largest to smallest.

    kl_per_unit maps (latent_dim, seed) to the list of mean KL per unit (nats, training split).
    """
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    dims = summary["latent_dim"].to_numpy()
    _band(ax, summary, "active_units", "tab:red", "active units (mean over seeds)")
    ax.plot(dims, dims, ":", color="gray", label="every unit active (d)")
    if true_dim is not None:
        ax.axhline(true_dim, color="k", linestyle="--", linewidth=1, label=f"true latent dimension ({true_dim})")
    _latent_axis(ax, dims)
    ax.set_ylabel("active units: Var_x(E_q[z_u|x]) > threshold")
    ax.set_title("latent units in use", loc="left")
    ax.legend(fontsize=8)
    cmap = plt.get_cmap("viridis")
    keys = sorted(kl_per_unit)
    first_seed = {}
    for d, seed in keys:
        first_seed.setdefault(d, seed)
    for i, d in enumerate(sorted(first_seed)):
        kls = sorted(kl_per_unit[(d, first_seed[d])], reverse=True)
        ax2.plot(range(1, len(kls) + 1), kls, "o-", markersize=3, color=cmap(i / max(1, len(first_seed) - 1)), label=f"d={d}")
    ax2.set_xlabel("latent unit, ranked by KL")
    ax2.set_ylabel("mean KL(q(z_u|x) ‖ N(0,1)), nats")
    ax2.set_title("KL per latent unit (first seed of each d)", loc="left")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=7, ncol=2)
    fig.suptitle(subtitle, fontsize=9, y=0.02, va="bottom")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def as_pictures(flat: np.ndarray, image_shape: list[int]) -> np.ndarray:
    """Flattened examples as pictures: (N, H, W) grey, (N, H, W, 3) colour; plain vectors of length D
    are shown as the smallest square that holds them, padded with zeros."""
    flat = np.asarray(flat, dtype=np.float32)
    if len(image_shape) == 3:
        c, h, w = image_shape
        pics = flat.reshape(len(flat), c, h, w)
        return pics[:, 0] if c == 1 else pics.transpose(0, 2, 3, 1)
    side = int(np.ceil(np.sqrt(flat.shape[1])))
    padded = np.zeros((len(flat), side * side), dtype=np.float32)
    padded[:, : flat.shape[1]] = flat
    return padded.reshape(len(flat), side, side)


def image_grid(
    rows: list[np.ndarray], *, row_labels: list[str], title: str, path: str | Path, dpi: int = 120, ncol: int | None = None
) -> None:
    """Pictures (each array (N, H, W) grey or (N, H, W, 3) colour, values in [0, 1]) in a grid:
    one labelled block per entry of rows."""
    ncol = ncol or max(len(r) for r in rows)
    blocks = []
    for r in rows:
        n, h, w = r.shape[:3]
        extra = r.shape[3:]
        nrow = -(-n // ncol)
        padded = np.zeros((nrow * ncol, h, w, *extra), dtype=np.float32)
        padded[:n] = r
        blocks.append(padded.reshape(nrow, ncol, h, w, *extra).swapaxes(1, 2).reshape(nrow * h, ncol * w, *extra))
    height = sum(b.shape[0] / b.shape[1] * ncol for b in blocks) * 0.55 + 0.8
    fig, axes = plt.subplots(len(blocks), 1, figsize=(ncol * 0.55 + 1.5, height), squeeze=False)
    for ax, block, label in zip(axes[:, 0], blocks, row_labels):
        ax.imshow(np.clip(block, 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, fontsize=9)
    axes[0, 0].set_title(title, fontsize=10)
    _save(fig, path, dpi)


def model_pictures_figure(
    x: np.ndarray,
    recon: np.ndarray,
    samples: np.ndarray,
    image_shape: list[int],
    *,
    title: str,
    reconstructions_path: str | Path,
    samples_path: str | Path,
    dpi: int = 120,
) -> None:
    """A model's two pictures: test images above their reconstructions, and samples from the prior
    (all flattened arrays of pixel means, shown with as_pictures)."""
    image_grid(
        [as_pictures(x, image_shape), as_pictures(recon, image_shape)],
        row_labels=["test", "recon."],
        title=f"{title}: test images and reconstructions",
        path=reconstructions_path,
        dpi=dpi,
    )
    image_grid(
        [as_pictures(samples, image_shape)],
        row_labels=["z ~ N(0, I)"],
        ncol=min(16, len(samples)),
        title=f"{title}: samples from the prior (pixel means)",
        path=samples_path,
        dpi=dpi,
    )
