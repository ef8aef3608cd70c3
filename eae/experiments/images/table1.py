"""Table 1 of the image experiments (SPEC §3.2): the datasets' ``metrics.csv`` (one row
per model, :func:`eae.experiments.images.metrics.model_metrics`) → ``table1.csv`` in the
paper's layout and ``table1.md`` with notes on what each number is (stage
:func:`table1_stage`). Reads CSVs only: no models, no TensorFlow."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from eae.core.temperature import TEMPERATURE_COLUMNS
from eae.support.io import write_csv_atomic, write_text_atomic

log = logging.getLogger("eae")

__all__ = ["MODEL_LABELS", "DATASET_LABELS", "COLUMNS", "table1", "table1_markdown",
           "table1_stage"]

MODEL_LABELS = {"eae": "EAE", "vae": "VAE", "ae": "Vanilla AE", "pca": "PCA"}
DATASET_LABELS = {"mnist": "MNIST", "frey": "Frey Faces"}

#: Columns of metrics.csv, in order.
COLUMNS = [
    "dataset", "model", "label", "latent_dim", "n_test", "n_members",
    "test_mse", "mse_of", "test_mse_chain_min", "test_mse_chain_max",
    "active_threshold", "active_units", "active_of",
    "active_units_all_samples", "active_units_member_mean",
    "relative_active_fraction", "active_units_relative", "code_scale",
    "pca_variance", "pcs_99", "pcs_99_all_samples",
    "probe", "probe_accuracy", "probe_chance",
]


# --------------------------------------------------------------------------- Table 1

_ORDER = {"eae": 0, "vae": 1, "ae": 2, "pca": 3}


def _fmt(value, kind: str, latent: Any = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if kind == "mse":
        return f"{value:.4f}" if value >= 1e-3 else f"{value:.5f}"  # the paper's 4 decimals
    if kind == "units":
        return f"{int(round(value))}/{int(latent)}"
    if kind == "mean_units":
        return f"{value:.1f}/{int(latent)}"
    if kind == "acc":
        return f"{100 * value:.1f} %"
    return str(int(round(value)))


_TABLE_METRICS = [
    # (csv column, table column, format)
    ("test_mse", "test MSE", "mse"),
    ("active_units", "active units", "units"),
    ("active_units_all_samples", "active (all EAE samples)", "units"),
    ("active_units_relative", "active (relative)", "units"),
    ("pcs_99", "PCs 99 %", "int"),
    ("probe_accuracy", "probe acc.", "acc"),
]


def table1(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Paper layout: one row per model (EAE, VAE, Vanilla AE, PCA), for each dataset the
    columns ``<dataset>/<metric>`` (raw numbers)."""
    if not frames:
        raise ValueError("table1 needs at least one dataset's metrics")
    parts = []
    for frame in frames:
        missing = sorted(set(COLUMNS) - set(frame.columns))
        if missing:
            raise ValueError(f"metrics table lacks column(s) {missing}")
        ds = str(frame["dataset"].iloc[0])
        extra = ["latent_dim", "pcs_99_all_samples", "active_units_member_mean", "code_scale"]
        extra += [c for c in TEMPERATURE_COLUMNS if c in frame.columns]
        sub = frame.set_index("model")[[c for c, _, _ in _TABLE_METRICS] + extra]
        sub.columns = [f"{ds}/{c}" for c in sub.columns]
        parts.append(sub)
    wide = pd.concat(parts, axis=1)
    wide = wide.loc[sorted(wide.index, key=lambda m: _ORDER.get(m, 99))]
    labels = {}
    for frame in frames:
        labels.update(dict(zip(frame["model"], frame["label"])))
    wide.insert(0, "label", [labels[m] if m != "pca" else "PCA" for m in wide.index])
    wide.index.name = "model"
    return wide.reset_index()


def _temperature_note(name: str, r: Mapping[str, Any]) -> str:
    """The EAE's measured temperatures (eae.temperature) as a note, flagged when out."""
    if "T flag" not in r or not isinstance(r["T flag"], str):
        return f"- {name} EAE temperature: not measured (a store from before eae.temperature)."
    cells = ", ".join(f"{c} {float(r[c]):.3g}" for c in TEMPERATURE_COLUMNS[:4])
    flag = ("**" + r["T flag"] + "** — the ensemble is not at its target T; its numbers "
            "describe the temperature it reached") if r["T flag"] != "ok" else "within the bands"
    text = f"- {name} EAE temperature (measured, ratio to the target T): {cells}; {flag}."
    improper = r.get("improper")
    if isinstance(improper, str) and improper != "not measured":
        growth = ", ".join(f"{c} {float(r[c]):.2f}" for c in ("θ growth train", "θ growth ensemble"))
        text += (f" Ensemble well-posedness (log–log slope of ‖θ − θ₀‖ against steps over "
                 f"the last half of each phase; > 0.25 = improper): {growth}; "
                 + ("**" + improper + "**: θ keeps moving away, so the members are no draws "
                    "of a stationary ensemble (exp(−L/T) does not confine the encoder, or it "
                    "is still drifting)" if improper != "ok" else "stationary") + ".")
    return text


def _scales(frames: Sequence[pd.DataFrame]) -> str:
    parts = []
    for frame in frames:
        name = DATASET_LABELS.get(str(frame["dataset"].iloc[0]), str(frame["dataset"].iloc[0]))
        cells = ", ".join(f"{MODEL_LABELS.get(m, m)} {v:.3g}"
                          for m, v in zip(frame["model"], frame["code_scale"]))
        parts.append(f"{name}: {cells}")
    return "; ".join(parts)


def table1_markdown(wide: pd.DataFrame, frames: Sequence[pd.DataFrame]) -> str:
    """Markdown version of :func:`table1` with notes on what each number is."""
    datasets = [str(f["dataset"].iloc[0]) for f in frames]
    header = ["Model"]
    for ds in datasets:
        name = DATASET_LABELS.get(ds, ds)
        header += [f"{name} {title}" for _, title, _ in _TABLE_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in wide.iterrows():
        label = row["label"]
        if row["model"] == "pca":
            lat = [row.get(f"{ds}/latent_dim") for ds in datasets]
            lat = [int(v) for v in lat if v == v and v is not None]
            label = f"PCA-{lat[0]}" if lat and len(set(lat)) == 1 else "PCA"
        cells = [label]
        for ds in datasets:
            latent = row.get(f"{ds}/latent_dim")
            for col, _, kind in _TABLE_METRICS:
                cells.append(_fmt(row.get(f"{ds}/{col}"), kind, latent))
        lines.append("| " + " | ".join(cells) + " |")
    first = frames[0].iloc[0]
    labelled = [f for f in frames if (f["probe"] != "no labels").any()]
    probe_text = (labelled[0].loc[labelled[0]["probe"] != "no labels", "probe"].iloc[0]
                  if labelled else "no dataset has labels")
    notes = ["", "Notes:", "",
             "- test MSE: mean over test images and pixels (in [0, 1]) of (reconstruction − x)². "
             "EAE: decoder output for the ensemble-mean code z̄(x) = mean over members of E_θk(x). "
             "VAE: the decoder's sigmoid output (pixel probabilities) for the posterior mean μ(x), "
             "no sampling, compared with x by MSE (the VAE is trained with binary cross-entropy). "
             "Vanilla AE: decoder output for the code. PCA: rank-k reconstruction, PCA fitted on the "
             "training split.",
             f"- active units: latent dimensions whose variance over the test set exceeds "
             f"{first['active_threshold']:g} (Burda et al. 2015). EAE: of the ensemble-mean code; "
             "VAE: of the posterior mean; AE and PCA: of the code. 'active (all EAE samples)': "
             "variance over all members × test images of the EAE's latent samples (it includes the "
             "member-to-member spread).",
             f"- active (relative): units whose variance over the test set is at least "
             f"{100 * first['relative_active_fraction']:g} % of the mean per-unit variance of the "
             "same codes (EAE: the ensemble-mean code over all chains). Nothing fixes the scale "
             "of EAE or AE codes, so the fixed threshold above says little about them (code "
             "scale, the mean per-unit variance: " + _scales(frames) + "); the VAE's KL term "
             "fixes its scale. This count and the PCs are unchanged by a rescaling of the codes.",
             f"- PCs {100 * first['pca_variance']:g} %: number of principal components holding that "
             "fraction of the code variance (EAE: of the ensemble-mean code).",
             f"- probe acc.: {probe_text} (ensemble-mean code for the EAE); — where the "
             "dataset has no labels."]
    for frame in frames:
        eae = frame[frame["model"] == "eae"]
        if len(eae):
            r = eae.iloc[0]
            notes.append(
                f"- {DATASET_LABELS.get(r['dataset'], r['dataset'])} EAE: {int(r['n_members'])} ensemble "
                f"members; per member, on average {r['active_units_member_mean']:.1f}/{int(r['latent_dim'])} "
                f"active units over the test set; all samples need {int(r['pcs_99_all_samples'])} PCs "
                f"for {100 * r['pca_variance']:g} % of their variance.")
            notes.append(
                f"- {DATASET_LABELS.get(r['dataset'], r['dataset'])} EAE per chain: the decoder "
                f"of each chain's own mean code has test MSE {r['test_mse_chain_min']:.4f}–"
                f"{r['test_mse_chain_max']:.4f} (pooled over chains: {r['test_mse']:.4f}); "
                "results/<dataset>/diagnostics.csv gives the between-chain share of the "
                "latent variance.")
            notes.append(_temperature_note(DATASET_LABELS.get(r["dataset"], r["dataset"]), r))
        chance = frame["probe_chance"].dropna()
        if len(chance):
            name = str(frame["dataset"].iloc[0])
            notes.append(f"- {DATASET_LABELS.get(name, name)} probe chance level "
                         f"(most frequent class): {100 * chance.iloc[0]:.1f} %.")
    notes.append("- Paper (Table 1): MNIST MSE / active EAE 0.026 64/64, VAE 0.016 16/64, AE 0.010 53/64; "
                 "Frey EAE 0.0052 64/64, VAE 0.0046 3/64, AE 0.0014 64/64.")
    return "\n".join(lines + notes) + "\n"


def table1_stage(per_dataset_csvs: Iterable[str | os.PathLike], out_csv: str | os.PathLike,
                 out_md: str | os.PathLike) -> pd.DataFrame:
    """Workflow stage ``table1``: the datasets' metrics.csv → table1.csv and table1.md."""
    from eae.support.provenance import make_record, now_iso, record_outputs

    started = now_iso()
    csvs = [Path(p) for p in per_dataset_csvs]
    for p in csvs:
        if not p.is_file():
            raise FileNotFoundError(f"metrics table not found: {p}")
    frames = [pd.read_csv(p) for p in csvs]
    wide = table1(frames)
    text = table1_markdown(wide, frames)
    write_csv_atomic(wide, out_csv)
    write_text_atomic(out_md, text)
    record = make_record("images_table1", config={"datasets": [str(f["dataset"].iloc[0]) for f in frames]},
                         inputs=csvs, started=started)
    record_outputs(record, [out_csv, out_md])
    log.info("Table 1:\n%s", text)
    return wide
