"""Fig 3 and ``faces.csv``: how generic the faces EAEs' reconstructions are.

The "generic vs individual" measure (:func:`generic_ratio`): the mean pairwise
Euclidean distance between the reconstructions of different test faces divided by
that between the originals. 1 means reconstructions differ from each other as much as
the faces do; 0 means every face is reconstructed as the same image — which a dead
decoder's flat grey output also achieves. Hence :func:`generic_share`: the share of
test reconstructions that correlate ≥ 0.9 with the training mean face (a constant
image counts as a failure), beside the same share of the test faces themselves. The
paper's claim (a hot EAE reconstructs every face as one generic *face*) is marked
reproduced (column ``paper_claim`` of the hot row) only when the hot ensemble is
stationary (:mod:`eae.core.wellposed`) and its generic share exceeds both the originals'
and the cold model's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from eae.experiments.faces.data import load_faces, load_faces_at, resolve_report_config, to_float
from eae.support.io import temperature_tag, write_csv_atomic
from eae.core.temperature import store_temperature_columns
from eae.support.provenance import make_record, now_iso, record_outputs

log = logging.getLogger("eae")

# --------------------------------------------------------------------------- metrics


def _flat64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(len(x), -1)


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix [n, n] of the rows of ``x`` (any shape, flattened)."""
    a = _flat64(x)
    sq = np.einsum("ij,ij->i", a, a)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (a @ a.T)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(np.maximum(d2, 0.0))  # round-off can make tiny distances negative


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of different samples."""
    n = len(x)
    if n < 2:
        raise ValueError("mean_pairwise_distance needs at least two samples")
    d = pairwise_distances(x)
    return float(d[np.triu_indices(n, 1)].mean())


def generic_ratio(reconstructions: np.ndarray, originals: np.ndarray) -> float:
    """Mean pairwise distance of the reconstructions of different faces divided by
    that of the originals: 1 = as individual as the faces, 0 = one generic face."""
    return mean_pairwise_distance(reconstructions) / mean_pairwise_distance(originals)


#: a reconstruction is the generic face when it correlates at least this with the mean face
GENERIC_CORRELATION = 0.9


def generic_share(images: np.ndarray, mean_face: np.ndarray,
                  threshold: float = GENERIC_CORRELATION) -> float:
    """Share of ``images`` whose Pearson correlation over pixels with the training mean
    face is at least ``threshold``. A constant image has no correlation and counts as
    a failure, never as generic: a dead decoder's flat grey output is no face at all
    (:func:`generic_ratio` reports it as perfectly generic)."""
    x = _flat64(images)
    m = np.asarray(mean_face, np.float64).ravel()
    x = x - x.mean(axis=1, keepdims=True)
    m = m - m.mean()
    if not len(x):
        return math.nan
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(m)
    ok = (norms > 0) & (np.abs(x).max(axis=1) > 1e-6)  # (near-)constant images fail
    corr = np.where(ok, (x @ m) / np.where(ok, norms, 1.0), -np.inf)
    return float(np.mean(corr >= threshold))


def identification_accuracy(reconstructions: np.ndarray, originals: np.ndarray) -> float:
    """Fraction of reconstructions whose nearest original (Euclidean) is their own face."""
    r, o = _flat64(reconstructions), _flat64(originals)
    d2 = (r * r).sum(1)[:, None] + (o * o).sum(1)[None, :] - 2.0 * (r @ o.T)
    return float(np.mean(np.argmin(d2, axis=1) == np.arange(len(r))))


@dataclass
class FacesRun:
    """One temperature's trained model and ensemble."""

    temperature: float
    model_dir: Path
    ensemble_path: Path


def _decode(decoder, z: np.ndarray, batch_size: int) -> np.ndarray:
    out = [np.asarray(decoder(z[s : s + batch_size], training=False))
           for s in range(0, len(z), batch_size)]
    return np.concatenate(out).astype(np.float32)


def _latent_spread(ens: xr.Dataset, chunk: int = 50) -> tuple[float, float]:
    """(RMS over samples and units of the member-to-member std of the code,
    RMS over units of the face-to-face std of the ensemble-mean code), streamed over members."""
    n = ens.sizes["member"]
    total = sq = 0.0
    for s in range(0, n, chunk):
        z = ens["latent"].isel(member=slice(s, s + chunk)).values.astype(np.float64)
        total = total + z.sum(0)
        sq = sq + (z * z).sum(0)
    mean = total / n
    within = np.maximum(sq / n - mean * mean, 0.0)
    between = ens["latent_mean"].values.astype(np.float64).var(axis=0)
    return float(np.sqrt(within.mean())), float(np.sqrt(between.mean()))


def _roles(temperatures: Sequence[float]) -> list[str]:
    if len(temperatures) == 1:
        return ["only"]
    hot, cold = max(temperatures), min(temperatures)
    return ["hot" if t == hot else "cold" if t == cold else "intermediate" for t in temperatures]


def train_mean_face(data_path) -> np.ndarray:
    """The mean training face (float64 [rows, cols, channels]), what "generic" compares to."""
    return to_float(load_faces(data_path, "train").images).astype(np.float64).mean(axis=0)


def faces_metrics(run: FacesRun, data_path, batch_size: int = 256,
                  mean_face: np.ndarray | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Per temperature: the table row, the originals and their reconstructions
    (decoder applied to the ensemble-mean code), both float32 [n, rows, cols, channels].
    ``mean_face``: :func:`train_mean_face` (read from ``data_path`` when not given)."""
    from eae.support.runtime import keras

    from eae.support.io import member_view

    store = xr.open_zarr(run.ensemble_path, consolidated=False)
    ens = member_view(store)
    originals = to_float(load_faces_at(data_path, ens["store_index"].values))
    decoder = keras.saving.load_model(Path(run.model_dir) / "decoder.keras", compile=False)
    recon = _decode(decoder, ens["latent_mean"].values.astype(np.float32), batch_size)
    if recon.shape != originals.shape:
        raise ValueError(f"decoder output {recon.shape[1:]} differs from the faces {originals.shape[1:]}")
    history = pd.read_csv(Path(run.model_dir) / "history.csv")
    last = history.iloc[-1]
    within, between = _latent_spread(ens)
    if mean_face is None:
        mean_face = train_mean_face(data_path)
    row = {
        "temperature": run.temperature,
        "n_test": len(originals),
        "n_members": int(ens.sizes["member"]),
        "test_mse": float(np.mean((recon.astype(np.float64) - originals) ** 2)),
        "pairwise_distance_reconstructions": mean_pairwise_distance(recon),
        "pairwise_distance_originals": mean_pairwise_distance(originals),
        "generic_ratio": generic_ratio(recon, originals),
        "generic_share": generic_share(recon, mean_face),
        "generic_share_originals": generic_share(originals, mean_face),
        "identification_accuracy": identification_accuracy(recon, originals),
        "latent_member_std": within,
        "latent_face_std": between,
        "decoder_updates": int(last["update"]),
        "final_member_loss_mean": float(last["loss_mean"]),
        "final_member_loss_q05": float(last["loss_q05"]),
        "final_member_loss_q95": float(last["loss_q95"]),
        **store_temperature_columns(store.attrs),
    }
    return row, originals, recon


def faces_table_stage(runs: Sequence[FacesRun], data_path, table_path,
                      batch_size: int = 256) -> tuple[pd.DataFrame, dict]:
    """``faces.csv``: one row per temperature (hottest first) with the generic-vs-
    individual ratio and its context. Also returns {temperature: (originals, recon)}."""
    runs = sorted(runs, key=lambda r: -r.temperature)
    rows, images = [], {}
    mean_face = train_mean_face(data_path)
    for run, role in zip(runs, _roles([r.temperature for r in runs])):
        row, originals, recon = faces_metrics(run, data_path, batch_size, mean_face)
        rows.append({"role": role, **row})
        images[run.temperature] = (originals, recon)
        log.info("T = %g (%s): generic ratio %.3f, generic share %.2f (test faces %.2f), "
                 "identification %.2f, test MSE %.4g, ensemble %s", run.temperature, role,
                 row["generic_ratio"], row["generic_share"], row["generic_share_originals"],
                 row["identification_accuracy"], row["test_mse"], row["improper"])
    table = pd.DataFrame(rows)
    table["paper_claim"] = ""
    if len(table) > 1:
        hot = table.index[table["role"] == "hot"][0]
        verdict = generic_verdict(table.loc[hot], table[table["role"] == "cold"].iloc[0])
        table.loc[hot, "paper_claim"] = verdict
        log.info("faces: hot model's generic face: %s", verdict)
    write_csv_atomic(table, table_path, float_format="%.6g")
    return table, images


def generic_verdict(hot: Mapping[str, Any], cold: Mapping[str, Any]) -> str:
    """"reproduced" when the hot ensemble is stationary and reconstructs more test faces
    as the mean face than the test faces themselves are and than the cold model does;
    otherwise "not reproduced" and why."""
    why = []
    improper = str(hot.get("improper", ""))
    if improper.startswith("IMPROPER"):
        why.append(f"the hot ensemble is {improper.lower()} (θ keeps growing)")
    share, own, cold_share = (float(hot["generic_share"]), float(hot["generic_share_originals"]),
                              float(cold["generic_share"]))
    if not share > max(own, cold_share):
        why.append(f"generic share {share:.2f} not above the test faces' own {own:.2f} and the "
                   f"cold model's {cold_share:.2f}")
    return "reproduced" if not why else "not reproduced: " + "; ".join(why)


# --------------------------------------------------------------------------- figure

LABEL_W = 1.5  # inches for the row labels of the face grid
FACE_IN = 0.85  # one face
LOSS_H = 2.8  # panel a
TITLE_H = 0.45
MARGIN = 0.15


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on compute nodes
    import matplotlib.pyplot as plt

    return plt


def _show(ax, image: np.ndarray) -> None:
    image = np.clip(image, 0.0, 1.0)  # the ReLU output can exceed 1
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def faces_figure(histories: Mapping[float, pd.DataFrame], originals: np.ndarray,
                 reconstructions: Mapping[float, np.ndarray], out_path,
                 ratios: Mapping[float, float] | None = None, n_show: int = 8,
                 n_members: int | None = None, dpi: int = 120) -> Path:
    """Fig 3. a: per decoder update, mean and envelopes (5–95 % and min–max) of the
    ensemble-member losses, one colour per temperature. b–c: the first ``n_show`` test
    faces and, one row per temperature (hottest first), their reconstructions from the
    ensemble-mean code. Written atomically; size is exactly figsize × dpi."""
    plt = _pyplot()
    temps = sorted(histories, key=lambda t: -t)
    roles = dict(zip(temps, _roles(temps)))
    n_show = max(1, min(n_show, len(originals)))
    width = max(7.0, LABEL_W + n_show * FACE_IN + MARGIN)
    rows = 1 + len(temps)
    grid_h = rows * FACE_IN
    height = TITLE_H + LOSS_H + 0.55 + TITLE_H + grid_h + MARGIN
    fig = plt.figure(figsize=(width, height), dpi=dpi)

    def box(left, top, w, h):  # inches from the top-left -> figure fractions
        return [left / width, 1 - (top + h) / height, w / width, h / height]

    colors = plt.get_cmap("coolwarm")(np.linspace(1.0, 0.0, len(temps))) if len(temps) > 1 \
        else ["tab:blue"]
    ax = fig.add_axes(box(0.8, TITLE_H, width - 0.8 - 0.25, LOSS_H))
    for t, c in zip(temps, colors):
        h = histories[t]
        label = f"T = {temperature_tag(t)}" + (f" ({roles[t]})" if roles[t] in ("hot", "cold") else "")
        ax.fill_between(h["update"], h["loss_min"], h["loss_max"], color=c, alpha=0.12, lw=0)
        ax.fill_between(h["update"], h["loss_q05"], h["loss_q95"], color=c, alpha=0.3, lw=0)
        ax.plot(h["update"], h["loss_mean"], color=c, lw=1.3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("decoder update")
    ax.set_ylabel("member loss (MSE per pixel)")
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.grid(alpha=0.3, which="both", lw=0.5)
    fig.text(0.1 / width, 1 - 0.3 / height,
             "a  Ensemble-member losses per decoder update: mean, 5–95 % (dark) and min–max (light)",
             fontsize=10, weight="bold", va="center")
    top = TITLE_H + LOSS_H + 0.55
    members = f" of {n_members} encoder samples" if n_members else ""
    fig.text(0.1 / width, 1 - (top + 0.25) / height,
             f"b–c  Test faces and their reconstructions from ensemble-mean codes{members}",
             fontsize=10, weight="bold", va="center")
    top += TITLE_H
    labels = ["test faces"] + [
        f"T = {temperature_tag(t)}" + (f" ({roles[t]})" if roles[t] in ("hot", "cold") else "")
        + (f"\ngeneric ratio {ratios[t]:.2f}" if ratios and t in ratios else "") for t in temps]
    images = [originals] + [reconstructions[t] for t in temps]
    for r, (label, row_images) in enumerate(zip(labels, images)):
        y = top + r * FACE_IN
        fig.text((LABEL_W - 0.1) / width, 1 - (y + FACE_IN / 2) / height, label,
                 ha="right", va="center", fontsize=8.5)
        for i in range(n_show):
            _show(fig.add_axes(box(LABEL_W + i * FACE_IN + 0.03, y + 0.03, FACE_IN - 0.06,
                                   FACE_IN - 0.06)), row_images[i])
    from eae.support.io import save_figure

    return save_figure(fig, out_path, dpi)


def faces_report_stage(cfg: Mapping[str, Any] | None, data_path,
                       runs: Sequence[FacesRun | tuple], figure_path, table_path) -> pd.DataFrame:
    """Stage ``faces_report``: ``faces.csv`` and Fig 3 with provenance sidecars.
    ``runs``: (temperature, model_dir, ensemble_path) per temperature; ``cfg`` the
    ``faces.report`` block (n_show, dpi, batch_size)."""
    started = now_iso()
    cfg = resolve_report_config(cfg)
    runs = [r if isinstance(r, FacesRun) else FacesRun(float(r[0]), Path(r[1]), Path(r[2]))
            for r in runs]
    if not runs:
        raise ValueError("faces_report_stage: no runs (faces.temperatures is empty)")
    table, images = faces_table_stage(runs, data_path, table_path, cfg["batch_size"])
    histories = {r.temperature: pd.read_csv(r.model_dir / "history.csv") for r in runs}
    originals = next(iter(images.values()))[0]
    faces_figure(histories, originals, {t: rec for t, (_, rec) in images.items()}, figure_path,
                 ratios=dict(zip(table["temperature"], table["generic_ratio"])),
                 n_show=cfg["n_show"], n_members=int(table["n_members"].iloc[0]), dpi=cfg["dpi"])
    inputs = [data_path] + [p for r in runs for p in (r.model_dir / "history.csv",
                                                      r.model_dir / "decoder.keras",
                                                      r.ensemble_path)]
    record = make_record("faces_report", config=cfg,
                         inputs=inputs, started=started,
                         extra={"temperatures": [r.temperature for r in runs],
                                "generic_ratio": dict(zip(map(str, table["temperature"]),
                                                          table["generic_ratio"]))})
    record_outputs(record, [table_path, figure_path])
    return table
