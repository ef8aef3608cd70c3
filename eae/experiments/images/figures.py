"""Figures of the image experiments (SPEC §3.2; the paper's Figs 2 and 5).

* :func:`interpolation_figure` — Fig 2a: decoded linear interpolations between the mean
  codes of two digit classes, per model, under the pixel-space interpolation between the
  two classes' average test images ("Test data").
* :func:`latent_density_figure` — Fig 2b / Fig 5: per-digit densities (Gaussian KDE) of
  randomly chosen (seeded) active latent dimensions, one row per model. EAE: all latent
  samples of a seeded subset of ensemble members (the latent variables themselves);
  VAE: the posterior mean; AE: the code. Constant or degenerate data fall back to a
  histogram or are skipped with a note, never an error.
* :func:`samples_figure` — decoded latent draws: EAE codes drawn from the latent
  ensemble (random member, random test image) and one test image through several
  members; VAE prior samples N(0, I); optionally the AE decoding a Gaussian fitted to
  its test codes.

Every plotting function lays its axes out in inches (no tight bounding box), so the PNG
is exactly ``figsize × dpi`` pixels, and writes atomically (temporary name + rename).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from eae.support.io import save_figure
from eae.experiments.images.metrics import (
    DATASET_LABELS,
    MODEL_LABELS,
    active_units_from_variance,
    decode,
    encode,
    load_model,
    load_test_data,
    resolve_config,
    vae_posterior,
)

log = logging.getLogger("eae")

__all__ = [
    "interpolate_codes",
    "class_mean",
    "density_curve",
    "choose_density_dims",
    "DensityRow",
    "interpolation_figure",
    "latent_density_figure",
    "samples_figure",
    "figures_stage",
    "FIGURE_KINDS",
]

FIGURE_KINDS = ("interpolation", "densities", "samples")

# Layout constants (inches).
LABEL_W = 1.4  # row labels at the left of the interpolation figure
TITLE_H = 0.6  # figure title band
LAMBDA_H = 0.3  # λ labels above the first image row
DENSITY_W, DENSITY_H = 3.0, 2.6  # one density panel, with its row's header band
ROW_HEADER_H = 0.3  # model name and note above each row of density panels
LEGEND_W = 1.2
BLOCK_TITLE_H = 0.45  # title band above each block of the samples figure (one line)
LINE_H = 0.17  # each further line of a wrapped block title
SAMPLES_MIN_W = 6.0  # the samples figure is at least this wide, so its titles fit
CHARS_PER_INCH = 13  # ~ characters of 9-10 pt text per inch, for wrapping


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on compute nodes
    import matplotlib.pyplot as plt

    return plt




def _wrap(text: str, width_in: float, max_lines: int | None = None) -> list[str]:
    import textwrap

    lines = textwrap.wrap(text, max(10, int(width_in * CHARS_PER_INCH))) or [""]
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][:-1] + "…"
    return lines


MAX_STRIP_ASPECT = 8.0  # the widest a vector's strip is drawn, in units of its height


def display_shape(image_shape: Sequence[int]) -> tuple[int, ...]:
    """How a sample is drawn: (rows, cols) grey, (rows, cols, 3) RGB, a vector of d
    features as a (1, d) strip."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 1:
        return (1, shape[0])
    if len(shape) == 3 and shape[2] == 1:
        return shape[:2]
    return shape


def _cell_aspect(image_shape: Sequence[int]) -> float:
    return min(display_shape(image_shape)[1] / display_shape(image_shape)[0], MAX_STRIP_ASPECT)


def display_range(x: np.ndarray) -> tuple[float, float]:
    """The value range mapped to black..white: [0, 1] for data inside it, else the data's."""
    lo, hi = float(np.min(x)), float(np.max(x))
    return (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi if hi > lo else lo + 1.0)


def _images(x: np.ndarray, image_shape: Sequence[int],
            vrange: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    imgs = np.asarray(x, np.float64).reshape((-1,) + display_shape(image_shape))
    return np.clip((imgs - vrange[0]) / (vrange[1] - vrange[0]), 0.0, 1.0)


def _show(ax, img: np.ndarray, **kw) -> None:
    if img.ndim == 2:  # grey through the colour map; RGB is already in [0, 1]
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest", **kw)
    else:
        ax.imshow(img, interpolation="nearest", **kw)


# --------------------------------------------------------------------------- helpers


def interpolate_codes(a: np.ndarray, b: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(λ [steps] from 0 to 1, codes [steps, d] = (1 − λ) a + λ b)."""
    if steps < 2:
        raise ValueError(f"interpolation needs at least 2 steps, got {steps}")
    lam = np.linspace(0.0, 1.0, int(steps))
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return lam, (1.0 - lam)[:, None] * a[None, :] + lam[:, None] * b[None, :]


def class_mean(values: np.ndarray, labels: np.ndarray, cls) -> np.ndarray:
    """Mean (float64) of the rows of ``values`` whose label is ``cls``."""
    sel = np.asarray(labels) == cls
    if not sel.any():
        raise ValueError(f"no test sample has label {cls!r} (labels present: {sorted(set(np.unique(labels)))})")
    return np.asarray(values, np.float64)[sel].mean(axis=0)


def density_curve(values: np.ndarray, grid: np.ndarray, max_points: int = 20000,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray | None, str]:
    """Density of ``values`` on ``grid`` and how it was made.

    ``"kde"``: scipy's Gaussian KDE (Scott's rule) on at most ``max_points`` values (a
    seeded subsample). ``"hist"``: a histogram on the grid's bins, used when the spread is
    below the grid spacing (the KDE would be a spike the grid misses) or the KDE fails.
    ``"constant"`` (all values equal) and ``"empty"`` return ``None``.
    """
    from scipy.stats import gaussian_kde

    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None, "empty"
    if v.size < 2 or np.ptp(v) <= 1e-12 * max(1.0, float(np.abs(v).max())):
        return None, "constant"
    if v.size > max_points:
        rng = rng or np.random.default_rng(0)
        v = rng.choice(v, size=max_points, replace=False)
    spacing = float(grid[1] - grid[0]) if len(grid) > 1 else 1.0
    if v.size >= 3 and v.std() >= spacing:
        try:
            y = gaussian_kde(v)(grid)
            if np.all(np.isfinite(y)):
                return y, "kde"
        except (np.linalg.LinAlgError, ValueError):
            pass
    edges = np.concatenate([grid - spacing / 2, grid[-1:] + spacing / 2])
    hist, _ = np.histogram(v, bins=edges, density=False)
    return hist / (v.size * spacing), "hist"


def choose_density_dims(variances: Mapping[str, np.ndarray], n_dims: int, threshold: float,
                        seed: int = 0) -> tuple[dict[str, list[int]], str]:
    """Pick ``n_dims`` latent dimensions per model (seeded).

    As in the paper, dimensions active (variance > ``threshold``) in *every* model are
    preferred and shared by all rows; when fewer than ``n_dims`` are, each model gets its
    own active dimensions, and a model with too few active ones is filled up with its
    highest-variance dimensions. Returns the choice and a note saying which rule applied.
    """
    rng = np.random.default_rng([int(seed), 11])
    names = list(variances)
    dims_n = {name: len(np.asarray(v)) for name, v in variances.items()}
    active = {name: np.flatnonzero(np.asarray(v) > threshold) for name, v in variances.items()}
    if len(set(dims_n.values())) == 1:
        shared = set(range(next(iter(dims_n.values()))))
        for name in names:
            shared &= set(active[name].tolist())
        if len(shared) >= n_dims:
            pick = sorted(rng.choice(sorted(shared), size=n_dims, replace=False).tolist())
            return {name: pick for name in names}, f"dimensions active in all models, {len(shared)} such"
    out, notes = {}, []
    for name in names:
        act = active[name]
        if len(act) >= n_dims:
            out[name] = sorted(rng.choice(act, size=n_dims, replace=False).tolist())
        else:
            order = np.argsort(np.asarray(variances[name]))[::-1]
            extra = [int(d) for d in order if d not in set(act.tolist())][: n_dims - len(act)]
            out[name] = sorted(act.tolist()) + extra
            notes.append(f"{name}: only {len(act)} active")
    note = "too few active in all models: per-model active dimensions"
    return out, note + (f"; {', '.join(notes)}, filled with the most variable" if notes else "")


# --------------------------------------------------------------------------- figures


def interpolation_figure(rows: Mapping[str, np.ndarray], image_shape: Sequence[int],
                         lambdas: Sequence[float], path: str | os.PathLike, title: str = "",
                         dpi: int = 120, cell: float = 0.8,
                         vrange: tuple[float, float] = (0.0, 1.0)) -> Path:
    """One row of decoded images per entry of ``rows`` (label → images [steps, pixels]),
    one column per λ. Size: (LABEL_W + steps·cell·cols/rows) × (TITLE_H + LAMBDA_H + n·cell) in.
    ``vrange``: the values drawn black and white (:func:`display_range`)."""
    plt = _pyplot()
    steps = len(lambdas)
    cw, ch = cell * _cell_aspect(image_shape), cell
    width, height = LABEL_W + steps * cw + 0.1, TITLE_H + LAMBDA_H + len(rows) * ch + 0.1
    fig = plt.figure(figsize=(width, height))
    for i, (label, imgs) in enumerate(rows.items()):
        imgs = _images(imgs, image_shape, vrange)
        if len(imgs) != steps:
            raise ValueError(f"row {label!r} has {len(imgs)} images for {steps} λ values")
        for j in range(steps):
            left = (LABEL_W + j * cw) / width
            bottom = (height - TITLE_H - LAMBDA_H - (i + 1) * ch) / height
            ax = fig.add_axes((left, bottom, 0.96 * cw / width, 0.96 * ch / height))
            _show(ax, imgs[j], **({"aspect": "auto"} if len(image_shape) == 1 else {}))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"λ={lambdas[j]:.2f}", fontsize=8, pad=3)
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=10, labelpad=8)
    fig.suptitle(title, y=1 - 0.15 * TITLE_H / height, va="top", fontsize=11)
    return save_figure(fig, path, dpi)


@dataclass
class DensityRow:
    """One model's row of the density figure: ``values`` [n, k] for the chosen ``dims``
    (k of them), per-sample ``labels`` (or None), and the activity ``variances`` [k]
    printed in each panel (defaults to the variance of ``values``)."""

    label: str
    values: np.ndarray
    dims: Sequence[int]
    labels: np.ndarray | None = None
    variances: np.ndarray | None = None
    note: str = ""


def latent_density_figure(rows: Sequence[DensityRow], path: str | os.PathLike, title: str = "",
                          dpi: int = 120, max_points: int = 20000, seed: int = 0,
                          n_grid: int = 256) -> Path:
    """Per-class densities of latent dimensions: a row per model (headed by its label and
    note), a panel per dimension with σ² in its corner. Size: (k·DENSITY_W + LEGEND_W) ×
    (n·DENSITY_H + TITLE_H) in."""
    plt = _pyplot()
    if not rows:
        raise ValueError("latent_density_figure needs at least one row")
    ncols = max(len(r.dims) for r in rows)
    width, height = ncols * DENSITY_W + LEGEND_W, len(rows) * DENSITY_H + TITLE_H
    fig = plt.figure(figsize=(width, height))
    classes = sorted(set().union(*[set(np.unique(r.labels).tolist()) for r in rows if r.labels is not None]))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    colours = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}
    rng = np.random.default_rng([int(seed), 13])
    for i, row in enumerate(rows):
        values = np.asarray(row.values, np.float64)
        if values.ndim != 2 or values.shape[1] != len(row.dims):
            raise ValueError(f"row {row.label!r}: values must be [n, {len(row.dims)}], got {values.shape}")
        variances = values.var(axis=0) if row.variances is None else np.asarray(row.variances)
        row_top = height - TITLE_H - i * DENSITY_H
        header = row.label + (f" — {row.note}" if row.note else "")
        fig.text(0.1 / width, (row_top - 0.05) / height, _wrap(header, width - 0.2, 1)[0],
                 fontsize=9, va="top", ha="left", weight="bold")
        for j, dim in enumerate(row.dims):
            left = (j * DENSITY_W + 0.55) / width
            bottom = (row_top - DENSITY_H + 0.45) / height
            ax = fig.add_axes((left, bottom, (DENSITY_W - 0.75) / width,
                               (DENSITY_H - 0.45 - ROW_HEADER_H - 0.3) / height))
            col = values[:, j]
            lo, hi = np.nanpercentile(col, [0.5, 99.5]) if col.size else (0.0, 1.0)
            pad = 0.1 * (hi - lo) if hi > lo else 0.5 * max(1.0, abs(lo))
            grid = np.linspace(lo - pad, hi + pad, n_grid)
            groups = [(c, row.labels == c) for c in classes] if row.labels is not None else [(None, slice(None))]
            skipped = []
            for c, sel in groups:
                y, how = density_curve(col[sel], grid, max_points, rng)
                colour = colours.get(c, "black")
                if how == "kde":
                    ax.plot(grid, y, color=colour, lw=1.2)
                elif how == "hist":
                    ax.step(grid, y, where="mid", color=colour, lw=1.0)
                elif how == "constant":
                    ax.axvline(col[sel][0], color=colour, lw=1.0, ls="--")
                    skipped.append(f"{c if c is not None else 'all'}: constant")
                else:
                    skipped.append(f"{c}: no samples")
            ax.set_xlim(grid[0], grid[-1])
            ax.set_ylim(bottom=0)
            ax.text(0.97, 0.95, f"σ²={variances[j]:.3g}", transform=ax.transAxes, ha="right", va="top",
                    fontsize=8, bbox={"facecolor": "white", "alpha": 0.7, "lw": 0})
            if skipped:
                ax.text(0.03, 0.95, "\n".join(skipped[:4]), transform=ax.transAxes, ha="left", va="top",
                        fontsize=6, color="dimgray")
            ax.set_title(f"z{dim}", fontsize=9, pad=3)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel("density", fontsize=8)
            if i == len(rows) - 1:
                ax.set_xlabel("latent value", fontsize=8)
    if classes:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=colours[c], lw=2) for c in classes]
        fig.legend(handles, [str(c) for c in classes], title="label", loc="center right",
                   fontsize=8, title_fontsize=8, frameon=False,
                   bbox_to_anchor=(1 - 0.1 / width, 0.5))
    fig.suptitle("\n".join(_wrap(title, width - 0.4, 2)), y=1 - 0.08 / height, va="top", fontsize=10)
    return save_figure(fig, path, dpi)


def _mosaic(imgs: np.ndarray, ncols: int, pad: int = 1) -> np.ndarray:
    n, r, c = imgs.shape[:3]
    nrows = math.ceil(n / ncols)
    out = np.ones((nrows * (r + pad) + pad, ncols * (c + pad) + pad) + imgs.shape[3:])
    for k in range(n):
        i, j = divmod(k, ncols)
        out[pad + i * (r + pad): pad + i * (r + pad) + r, pad + j * (c + pad): pad + j * (c + pad) + c] = imgs[k]
    return out


def samples_figure(blocks: Mapping[str, np.ndarray | tuple[np.ndarray, int]], image_shape: Sequence[int],
                   path: str | os.PathLike, title: str = "", dpi: int = 120, cell: float = 0.6,
                   ncols: int = 8, vrange: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Blocks of decoded images (title → images [n, pixels], or (images, ncols)), each a
    mosaic under its (wrapped) title. Width: max(SAMPLES_MIN_W, max ncols·cell·cols/rows +
    0.4) in; height: TITLE_H + Σ (BLOCK_TITLE_H + LINE_H·(title lines − 1) + block rows·cell).
    Vectors are drawn as strips; ``vrange``: the values drawn black and white."""
    plt = _pyplot()
    cw = cell * _cell_aspect(image_shape)
    prepared = []
    for name, block in blocks.items():
        imgs, nc = block if isinstance(block, tuple) else (block, ncols)
        imgs = _images(imgs, image_shape, vrange)
        nc = int(min(nc, len(imgs))) if len(imgs) else 1
        prepared.append((name, imgs, nc, math.ceil(len(imgs) / nc)))
    width = max(SAMPLES_MIN_W, max(nc for _, _, nc, _ in prepared) * cw + 0.4)
    titles = [_wrap(name, width - 0.4) for name, _, _, _ in prepared]
    height = TITLE_H + sum(BLOCK_TITLE_H + LINE_H * (len(t) - 1) + nr * cell
                           for t, (_, _, _, nr) in zip(titles, prepared))
    fig = plt.figure(figsize=(width, height))
    top = height - TITLE_H
    for lines, (name, imgs, nc, nr) in zip(titles, prepared):
        top -= BLOCK_TITLE_H + LINE_H * (len(lines) - 1)
        ax = fig.add_axes((0.2 / width, (top - nr * cell) / height, nc * cw / width, nr * cell / height))
        _show(ax, _mosaic(imgs, nc), aspect="auto")
        ax.set_axis_off()
        fig.text(0.2 / width, (top + 0.08) / height, "\n".join(lines), fontsize=9, va="bottom", ha="left")
        top -= nr * cell
    fig.suptitle("\n".join(_wrap(title, width - 0.4, 2)), y=1 - 0.15 * TITLE_H / height, va="top",
                 fontsize=11)
    return save_figure(fig, path, dpi)


# --------------------------------------------------------------------------- stage


class _Models:
    """Lazily loaded codes and decoders of one dataset's models."""

    def __init__(self, paths: Mapping[str, Path], x_test: np.ndarray, labels, cfg,
                 label_names: Sequence[str] | None = None):
        self.p, self.x, self.labels, self.cfg = paths, x_test, labels, cfg
        self.vrange = display_range(x_test)
        self.label_names = dict(enumerate(label_names)) if label_names else None
        self._cache: dict[str, Any] = {}

    def _get(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def decoder(self, model: str):
        path = Path(self.p["eae"] if model == "eae" else self.p[model]) / "decoder.keras"
        return self._get(f"dec/{model}", lambda: load_model(path))

    def codes(self, model: str) -> np.ndarray:
        """EAE: ensemble-mean code; VAE: posterior mean; AE: code (test set)."""
        if model == "eae":
            return self._get("codes/eae", self._eae_mean)
        if model == "vae":
            return self.vae_posterior()[0]
        return self._get("codes/ae", lambda: encode(
            "ae", load_model(Path(self.p["ae"]) / "encoder.keras"), self.x, self.cfg["batch_size"]))

    def vae_posterior(self):
        return self._get("post/vae", lambda: vae_posterior(
            load_model(Path(self.p["vae"]) / "encoder.keras"), self.x, self.cfg["batch_size"]))

    def _eae_mean(self) -> np.ndarray:
        ds = self.ensemble()
        if "latent_mean" in ds.variables:
            return np.asarray(ds["latent_mean"].values, np.float32)
        from eae.experiments.images.metrics import ensemble_statistics

        return ensemble_statistics(self.p["ensemble"], chunk_members=self.cfg["chunk_members"])[
            "latent_mean"].astype(np.float32)

    def ensemble(self):
        def open_checked():
            from eae.support.io import open_ensemble
            from eae.experiments.images.metrics import _check_ensemble_matches, _ensemble_latent

            ds = open_ensemble(self.p["ensemble"])
            _ensemble_latent(ds)
            _check_ensemble_matches(ds, self.x, self.labels, self.p["ensemble"])
            return ds

        return self._get("ensemble", open_checked)

    def eae_member_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(member indices [m], codes [m, n, latent]) of a seeded subset of members."""
        def read():
            lat = self.ensemble()["latent"]
            n_members = int(lat.shape[0])
            m = min(int(self.cfg["density_members"]), n_members)
            rng = np.random.default_rng([int(self.cfg["seed"]), 17])
            members = np.sort(rng.choice(n_members, size=m, replace=False))
            return members, np.asarray(lat.isel(member=members.tolist()).values, np.float32)

        return self._get("members/eae", read)


def _interpolation_classes(labels: np.ndarray, cfg, dataset: str) -> tuple[int, int]:
    """``analysis.interpolate.classes`` (MNIST digits); a dataset of the ``datasets:``
    section that lacks one of them interpolates between its two most frequent test labels."""
    a, b = cfg["interpolate"]["classes"]
    missing = [cls for cls in (a, b) if not np.any(labels == cls)]
    if not missing:
        return a, b
    values, counts = np.unique(labels, return_counts=True)
    if dataset in DATASET_LABELS or len(values) < 2:
        raise ValueError(f"analysis.interpolate.classes: no test image of {dataset} has label "
                         f"{missing[0]}")
    a, b = (int(v) for v in sorted(values[np.argsort(-counts, kind="stable")[:2]]))
    log.info("%s: no test label %s; interpolating between labels %d and %d", dataset, missing, a, b)
    return a, b


def _interpolation(models: _Models, names: Sequence[str], image_shape, cfg, path, dataset) -> Path:
    labels = models.labels
    if labels is None:
        raise ValueError(f"{dataset}: the interpolation figure needs class labels; the test split has none")
    a, b = _interpolation_classes(labels, cfg, dataset)
    steps = int(cfg["interpolate"]["steps"])
    lam = np.linspace(0.0, 1.0, steps)
    x = models.x.astype(np.float64)
    rows = {"Test data": (1 - lam)[:, None] * class_mean(x, labels, a) + lam[:, None] * class_mean(x, labels, b)}
    for name in names:
        if name == "vae" and cfg["interpolate"]["vae_code"] == "sample":
            # Paper (A.5.2): average of reparameterised samples z = μ + σ ε over the class.
            mu, logvar = models.vae_posterior()
            eps = np.random.default_rng([int(cfg["seed"]), 19]).standard_normal(mu.shape)
            codes = mu + np.exp(0.5 * logvar.astype(np.float64)) * eps
        else:
            codes = models.codes(name)
        _, z = interpolate_codes(class_mean(codes, labels, a), class_mean(codes, labels, b), steps)
        rows[MODEL_LABELS[name]] = decode(models.decoder(name), z, cfg["batch_size"])
    name = (models.label_names or {}).get
    title = f"{DATASET_LABELS.get(dataset, dataset)}: interpolation between the mean codes of {name(a, a)} and {name(b, b)}"
    return interpolation_figure(rows, image_shape, lam, path, title=title, dpi=cfg["dpi"],
                                vrange=models.vrange)


def _densities(models: _Models, names: Sequence[str], cfg, path, dataset) -> Path:
    values, labels, descr = {}, {}, {}
    for name in names:
        if name == "eae":
            members, block = models.eae_member_codes()
            values[name] = block.reshape(-1, block.shape[-1])
            labels[name] = None if models.labels is None else np.tile(models.labels, len(members))
            descr[name] = f"all latent samples of {len(members)} random members"
        else:
            values[name] = models.codes(name)
            labels[name] = models.labels
            descr[name] = "posterior mean" if name == "vae" else "code"
    variances = {name: values[name].astype(np.float64).var(axis=0) for name in names}
    by_label, note = choose_density_dims({MODEL_LABELS[n]: variances[n] for n in names},
                                         int(cfg["density_dims"]), cfg["active_threshold"], cfg["seed"])
    rows = []
    for name in names:
        d = by_label[MODEL_LABELS[name]]
        n_act = active_units_from_variance(variances[name], cfg["active_threshold"])
        rows.append(DensityRow(
            label=MODEL_LABELS[name], values=values[name][:, d], dims=d, labels=labels[name],
            variances=variances[name][d],
            note=f"{descr[name]}; {n_act}/{len(variances[name])} dimensions active"))
    per = "per-class " if models.labels is not None else ""
    title = (f"{DATASET_LABELS.get(dataset, dataset)}: {per}densities of seeded random latent dimensions "
             f"({note}); σ² = variance over the plotted samples")
    return latent_density_figure(rows, path, title=title, dpi=cfg["dpi"],
                                 max_points=int(cfg["density_max_points"]), seed=cfg["seed"])


def _samples(models: _Models, names: Sequence[str], image_shape, cfg, path, dataset) -> Path:
    n = int(cfg["n_samples"])
    rng = np.random.default_rng([int(cfg["seed"]), 23])
    blocks: dict[str, Any] = {}
    bs = cfg["batch_size"]
    if "eae" in names:
        members, block = models.eae_member_codes()
        dec = models.decoder("eae")
        pick_m = rng.integers(0, len(members), size=n)
        pick_i = rng.integers(0, block.shape[1], size=n)
        blocks["EAE: decoded ensemble draws E_θk(x) (random member k, test image x)"] = \
            decode(dec, block[pick_m, pick_i], bs)
        k = min(int(cfg["sample_members"]), len(members))
        imgs = []
        for i in rng.choice(block.shape[1], size=min(2, block.shape[1]), replace=False):
            ms = np.sort(rng.choice(len(members), size=k, replace=False))
            z_mean = models.codes("eae")[i][None, :]
            imgs += [models.x[i][None, :], decode(dec, z_mean, bs), decode(dec, block[ms, i], bs)]
        blocks[f"EAE: test image | decoded ensemble mean | {k} single members"] = (
            np.concatenate(imgs), k + 2)
    if "vae" in names:
        latent = models.vae_posterior()[0].shape[1]
        z = rng.standard_normal((n, latent)).astype(np.float32)
        blocks["VAE: prior samples z ~ N(0, I)"] = decode(models.decoder("vae"), z, bs)
    if "ae" in names and cfg["ae_samples"]:
        codes = models.codes("ae").astype(np.float64)
        cov = np.cov(codes, rowvar=False, ddof=0).reshape(codes.shape[1], -1)
        z = rng.multivariate_normal(codes.mean(0), cov, size=n, method="eigh").astype(np.float32)
        blocks["Vanilla AE: z ~ N(mean, cov) of its test codes (Gaussian fit; no prior)"] = \
            decode(models.decoder("ae"), z, bs)
    if not blocks:
        raise ValueError("samples figure: no model to draw from (analysis.models is empty)")
    title = f"{DATASET_LABELS.get(dataset, dataset)}: generated samples"
    return samples_figure(blocks, image_shape, path, title=title, dpi=cfg["dpi"], ncols=min(n, 8),
                          vrange=models.vrange)


def figures_stage(dataset: str, cfg: Mapping[str, Any] | None, outputs: Mapping[str, str | os.PathLike],
                  paths: Mapping[str, str | os.PathLike]) -> dict[str, Path]:
    """Workflow stages ``images_figures`` and ``images_interpolation``: write the figures
    named in ``outputs`` (keys ``interpolation``, ``densities``, ``samples`` → PNG paths)
    for ``dataset`` and a provenance sidecar for each. ``paths``: the inputs, as in
    :func:`eae.experiments.images.metrics.model_metrics`."""
    from eae.experiments.images.metrics import _require, _resolve_paths, model_inputs, path_keys
    from eae.support.provenance import make_record, now_iso, record_outputs

    started = now_iso()
    cfg = resolve_config(cfg)
    unknown = sorted(set(outputs) - set(FIGURE_KINDS))
    if unknown:
        raise ValueError(f"unknown figure kind(s) {unknown}; choose from {list(FIGURE_KINDS)}")
    p = _resolve_paths(paths)
    _require(p, path_keys(cfg["models"]))
    x_test, labels, image_shape = load_test_data(p["data"])
    from eae.support.io import open_zarr

    models = _Models(p, x_test, labels, cfg, open_zarr(p["data"]).attrs.get("label_names"))
    names = list(cfg["models"])
    written: dict[str, Path] = {}
    try:
        if "interpolation" in outputs:
            written["interpolation"] = _interpolation(models, names, image_shape, cfg,
                                                      outputs["interpolation"], dataset)
        if "densities" in outputs:
            written["densities"] = _densities(models, names, cfg, outputs["densities"], dataset)
        if "samples" in outputs:
            written["samples"] = _samples(models, names, image_shape, cfg, outputs["samples"], dataset)
    except BaseException:
        for out in written.values():  # leave no partial set of figures behind
            Path(out).unlink(missing_ok=True)
        raise
    record = make_record(f"images_figures_{dataset}", config=cfg, seeds={"seed": cfg["seed"]},
                         inputs=model_inputs(p, names),
                         started=started)
    record_outputs(record, list(written.values()))
    for kind, out in written.items():
        log.info("figure %s: %s", kind, out)
    return written
