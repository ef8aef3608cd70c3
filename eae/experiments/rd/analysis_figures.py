"""Figures of the RD coefficient analysis: Fig 4 (correlations), Fig 1d (pair KDEs) and
Figs 1e–f (model trajectories and phase portraits).

Split out of :mod:`eae.experiments.rd.analysis` (which re-exports every name here);
matplotlib is imported on first use only (Agg backend).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from eae.experiments.rd.analysis_params import DOT, AnalysisParams
from eae.experiments.rd.coefficient_stats import linear_coefficient_index
from eae.experiments.rd.kde import kde_mode_2d


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_correlation(corr: np.ndarray, labels: Sequence[str], path) -> None:
    """Fig 4: the coefficient correlation matrix."""
    plt = _plt()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(0.32 * n + 2.5, 0.32 * n + 1.5))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(corr), cmap=cmap, vmin=-1, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_title("SINDy-EAE coefficient correlations over the encoder ensemble")
    fig.colorbar(im, ax=ax, shrink=0.8, label="Pearson r")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _a_label(i: int, j: int, latents: Sequence[str]) -> str:
    return f"ξ[{latents[j]} → {latents[i][0]}{DOT}{latents[i][1:]}]"


def plot_pairs_kde(coefficients: np.ndarray, terms, latents, pairs, path,
                   params: AnalysisParams = AnalysisParams()) -> list[dict]:
    """Fig 1d: 2-D KDE of the most co-varying pairs of linear coefficients, with the
    pair's KDE mode and the point it maps to under the z1 ↔ z2 permutation
    (A → P A P). Returns one dict per pair (labels, corr, mode, permuted)."""
    plt = _plt()
    idx = linear_coefficient_index(terms, latents)
    c = np.asarray(coefficients, np.float64)
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.6 * len(pairs), 4.2), squeeze=False)
    info = []
    for ax, (pa, pb, r) in zip(axes[0], pairs):
        a = c[:, idx[pa][0], idx[pa][1]]
        b = c[:, idx[pb][0], idx[pb][1]]
        mode, _ = kde_mode_2d(a, b, max_samples=params.kde_max_samples, seed=params.seed)
        # Under the z1 ↔ z2 permutation A[i, j] → A[1-i, 1-j]: where the mode would be
        # if the ensemble held the permuted model too (the paper's superposition).
        swap = {k: (1 - k[0], 1 - k[1]) for k in idx}
        perm = None
        if swap[pa] == pb:
            perm = (mode[1], mode[0])
        _, grid = kde_mode_2d(a, b, max_samples=params.kde_max_samples, seed=params.seed,
                              include=[perm] if perm is not None else [])
        if grid is not None:
            ax.contourf(*grid, levels=14, cmap="viridis")
        ax.scatter(a, b, s=2, c="w", alpha=0.25, linewidths=0)
        ax.plot(*mode, "r+", ms=14, mew=2, label=f"KDE mode ({mode[0]:.2f}, {mode[1]:.2f})")
        if perm is not None:
            if grid is not None:
                lo = max(grid[0].min(), grid[1].min())
                hi = min(grid[0].max(), grid[1].max())
                if hi > lo:
                    ax.plot([lo, hi], [lo, hi], "w--", lw=0.8)
            ax.plot(*perm, "wx", ms=10, mew=2, label="mode under z1 ↔ z2")
        ax.set_xlabel(_a_label(*pa, latents))
        ax.set_ylabel(_a_label(*pb, latents))
        ax.set_title(f"r = {r:+.2f}")
        ax.legend(fontsize=7, loc="best")
        info.append(dict(first=_a_label(*pa, latents), second=_a_label(*pb, latents),
                         corr=r, mode=mode, permuted=perm))
    fig.suptitle("Most co-varying linear SINDy coefficients (2-D KDE over the ensemble)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return info


def plot_dynamics(t: np.ndarray, z_test: np.ndarray, trajectories: Mapping[str, np.ndarray],
                  member_trajectories: Mapping[int, np.ndarray], latents, path,
                  t_model: np.ndarray | None = None) -> None:
    """Figs 1e–f: latent trajectories z(t) and phase portraits of the identified models
    (sampled at ``t_model``, default ``t``) beside the encoded test data."""
    t_model = t if t_model is None else t_model
    plt = _plt()
    fig = plt.figure(figsize=(13, 4.6))
    grid = fig.add_gridspec(2, 2, width_ratios=[2.2, 1])
    ax_t = [fig.add_subplot(grid[i, 0]) for i in range(2)]
    ax_p = fig.add_subplot(grid[:, 1])
    def style(name):  # keys like "mean model (all terms)"
        if name.startswith("mean"):
            return dict(color="tab:red", lw=1.6)
        if name.startswith("mode"):
            return dict(color="tab:blue", lw=1.6, ls="--")
        return {}

    for m, traj in member_trajectories.items():
        kw = dict(color="0.55", lw=0.6, alpha=0.7)
        for i in range(2):
            ax_t[i].plot(t_model, traj[:, i], **kw)
        first = m == min(member_trajectories)
        ax_p.plot(traj[:, 0], traj[:, 1], **kw, label="members" if first else None)
    for i in range(2):
        # a broad translucent band, so the model curves drawn on top leave it visible
        ax_t[i].plot(t, z_test[:, i], color="k", lw=5, alpha=0.25, label="encoded test data")
        for name, traj in trajectories.items():
            ax_t[i].plot(t_model, traj[:, i], label=name, **style(name))
        ax_t[i].set_ylabel(latents[i])
    ax_t[1].set_xlabel("time")
    ax_t[0].legend(fontsize=7, ncol=3, loc="upper right")
    ax_t[0].set_title("(e) latent trajectories from the encoding of the earliest test snapshot")
    ax_p.plot(z_test[:, 0], z_test[:, 1], color="k", lw=5, alpha=0.25, label="encoded test data")
    for name, traj in trajectories.items():
        ax_p.plot(traj[:, 0], traj[:, 1], label=name, **style(name))
    ax_p.plot(*z_test[0], "ko", ms=5)
    ax_p.set_xlabel(latents[0])
    ax_p.set_ylabel(latents[1])
    ax_p.set_title("(f) phase portrait")
    ax_p.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
