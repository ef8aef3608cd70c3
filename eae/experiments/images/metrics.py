"""Table 1 of the image experiments (SPEC §3.2): reconstruction error, latent activity
and two scale-free diagnostics for the EAE, the VAE, the vanilla AE and a PCA reference.

Per dataset and model (rows of ``results/<dataset>/metrics.csv``):

* ``test_mse`` — mean over test images and pixels of (reconstruction − x)². EAE: the
  decoder applied to the ensemble-mean code z̄(x); VAE: the decoder's sigmoid output
  for the posterior mean μ(x) (no sampling); AE: the decoder of the code; PCA: the
  rank-``latent_dim`` reconstruction fitted on the training split.
* ``active_units`` — latent dimensions whose variance over the test set exceeds
  ``active_threshold`` (Burda et al. 2015). VAE: of the posterior mean; AE and PCA: of
  the code; EAE: of the ensemble-mean code. The EAE also gets
  ``active_units_all_samples`` (variance over all M × N latent samples, streamed over
  members in float64) and ``active_units_member_mean`` (per member, the number of
  dimensions whose variance over the test set exceeds the threshold, averaged over
  members: the data-dependent part of the activity, without the member-to-member drift).
* ``active_units_relative`` — dimensions whose variance over the test set is at least
  ``relative_active_fraction`` (1 %) of the mean per-unit variance of the same codes,
  and ``code_scale``, that mean: nothing fixes the scale of an EAE's or an AE's codes
  (measured: per-unit variances of 100–630 on MNIST, so "variance > 0.01" holds
  trivially), whereas the VAE's KL term fixes its own; the relative count is scale-free.
* ``pcs_99`` — principal components holding ``pca_variance`` of the code variance
  (unaffected by a global rescaling of the codes, unlike the fixed 0.01 threshold).
* ``probe_accuracy`` — k-NN (or logistic) accuracy of the labels from the test-set
  codes, ``probe.folds``-fold cross-validated (the EAE ensemble exists for test images
  only, so every model is probed the same way); NaN without labels.

:mod:`eae.experiments.images.codes` holds the statistics of the codes (activity, PCs,
probes, the streaming pass over an ensemble store) and :mod:`eae.experiments.images.table1`
collects the per-dataset CSVs into ``table1.csv`` / ``table1.md`` (:func:`table1_stage`);
this module scores the trained models (stage :func:`metrics_stage`) and re-exports both.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from eae.core.temperature import TEMPERATURE_COLUMNS, store_temperature_columns
from eae.experiments.images.codes import (  # noqa: F401 (re-exported: the module's names before the split)
    PROBE_KINDS,
    StreamingMoments,
    _as_2d,
    _ensemble_latent,
    _probe_description,
    active_units,
    active_units_from_variance,
    code_variances,
    cross_validated_probe,
    ensemble_statistics,
    knn_predict,
    logistic_predict,
    pca_fit,
    pcs_for_variance,
    pcs_from_covariance,
    probe_accuracy,
    relative_active_units,
)
from eae.experiments.images.table1 import (  # noqa: F401 (re-exported, as above)
    _ORDER,
    _TABLE_METRICS,
    COLUMNS,
    DATASET_LABELS,
    MODEL_LABELS,
    _fmt,
    _scales,
    _temperature_note,
    table1,
    table1_markdown,
    table1_stage,
)
from eae.experiments.images import codes as _codes
from eae.support.io import write_csv_atomic

log = logging.getLogger("eae")

__all__ = [
    "TABLE1_SETTINGS",
    "MODEL_LABELS",
    "DATASET_LABELS",
    "COLUMNS",
    "resolve_config",
    *_codes.__all__,
    "pca_reference",
    "PATH_KEYS",
    "path_keys",
    "model_inputs",
    "load_test_data",
    "model_metrics",
    "metrics_stage",
    "table1",
    "table1_markdown",
    "table1_stage",
]

#: The ``analysis`` settings Table 1 depends on (rule ``images_metrics`` gets only these, so a
#: figure setting such as ``dpi`` reruns the figures, not the table).
TABLE1_SETTINGS = ("models", "pca_reference", "active_threshold", "relative_active_fraction",
                   "pca_variance", "probe", "chunk_members", "batch_size", "seed")

MODELS = ("eae", "vae", "ae")


# --------------------------------------------------------------------------- config


def resolve_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``cfg`` as the ``analysis`` config section: filled with the schema's defaults
    (``eae/schemas/analysis.schema.yaml``) and checked against it; a
    :class:`eae.support.config.ConfigError` (a ValueError) names the offending
    ``analysis.<key>``. The workflow's section is complete already (rule
    ``images_metrics`` passes only :data:`TABLE1_SETTINGS`; the rest take their defaults)."""
    from eae.support.config import section

    out = section("analysis", cfg)
    # Two *different* classes: the schema can say "two labels", not "distinct" (the
    # workflow checks it as the cross-field rule interpolation_classes).
    classes = out["interpolate"]["classes"]
    if classes[0] == classes[1]:
        raise ValueError(f"analysis.interpolate.classes must be two different labels, got {classes}")
    return out


def pca_reference(x_train: np.ndarray, x_test: np.ndarray, n_components: int,
                  test_labels: np.ndarray | None = None, cfg: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The PCA-``n_components`` reference: fitted on ``x_train``, its test codes scored
    like a model's (MSE of the reconstruction, active units, PCs, probe)."""
    cfg = resolve_config(cfg)
    pca = pca_fit(x_train, n_components)
    xt = np.asarray(x_test, np.float64)
    codes = (xt - pca["mean"]) @ pca["components"].T
    recon = codes @ pca["components"] + pca["mean"]
    k = pca["components"].shape[0]
    row = _code_metrics(codes, test_labels, cfg)
    row.update(
        model="pca", label=f"PCA-{k}", latent_dim=k,
        test_mse=float(np.mean((recon - xt) ** 2)),
        mse_of=f"rank-{k} PCA reconstruction (fitted on train)",
        active_of="PCA codes (projections on the leading components)",
    )
    return row


# --------------------------------------------------------------------------- models


#: The inputs a metrics or figures stage reads: names of its ``paths`` mapping (the
#: workflow's layout is :func:`eae.workflow.image_paths`).
PATH_KEYS = ("data", "eae", "ensemble", "vae", "ae")


def _resolve_paths(paths: Mapping[str, str | os.PathLike]) -> dict[str, Path]:
    if not isinstance(paths, Mapping):
        raise TypeError(f"paths must map {list(PATH_KEYS)} to files, not {type(paths).__name__} "
                        "(the workflow's layout: eae.workflow.image_paths(dataset, results_dir))")
    unknown = sorted(set(paths) - set(PATH_KEYS))
    if unknown:
        raise ValueError(f"unknown path key(s) {unknown}; known: {list(PATH_KEYS)}")
    return {k: Path(v) for k, v in paths.items()}


def _require(p: Mapping[str, Path], keys: Iterable[str]) -> None:
    missing = [k for k in keys if k not in p]
    if missing:
        raise ValueError(f"paths lacks {missing} (needed by the models to score)")


def load_test_data(data_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
    """(x_test float32 [n, pixels], labels int64 [n] or None, sample shape: (rows, cols[,
    channels]) or (features,))."""
    from eae.experiments.images.data import load_split, sample_shape
    from eae.support.io import open_zarr

    image_shape = sample_shape(open_zarr(data_path))
    x, labels = load_split(data_path, "test")
    if x.shape[0] == 0:
        raise ValueError(f"{data_path} has no test samples")
    return x, labels, image_shape


def load_model(path: str | os.PathLike):
    """A Keras model saved as ``.keras`` (clear error when missing)."""
    from eae.support.runtime import keras

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return keras.saving.load_model(path, compile=False)


def decode(decoder, z: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Decoder outputs for codes ``z``, flattened to [n, pixels] float32."""
    from eae.experiments.images.baseline_models import decode as _decode

    out = _decode(decoder, np.asarray(z, np.float32), batch_size)
    return out.reshape(out.shape[0], -1)


def _model_input(encoder, x: np.ndarray) -> np.ndarray:
    shape = tuple(int(s) for s in encoder.input_shape[1:])
    return np.asarray(x, np.float32).reshape((x.shape[0],) + shape)


def encode(kind: str, encoder, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Codes of ``x`` (VAE: posterior mean) for flat images, laid out for the encoder."""
    from eae.experiments.images.baseline_models import encode as _encode

    return _encode(kind, encoder, _model_input(encoder, x), batch_size)


def vae_posterior(encoder, x: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(posterior mean, log-variance) of a two-output VAE encoder, float32."""
    from eae.support.runtime import keras

    if len(encoder.outputs) != 2:
        raise ValueError(f"encoder {encoder.name!r} is not a VAE encoder (needs 2 outputs)")
    xm = _model_input(encoder, x)
    means, logvars = [], []
    for s in range(0, xm.shape[0], batch_size):
        m, lv = encoder(xm[s:s + batch_size], training=False)
        means.append(keras.ops.convert_to_numpy(m))
        logvars.append(keras.ops.convert_to_numpy(lv))
    return np.concatenate(means), np.concatenate(logvars)


def _check_ensemble_matches(ds, x_test: np.ndarray, labels: np.ndarray | None, path) -> None:
    n = int(ds.sizes["sample"])
    if n != x_test.shape[0]:
        raise ValueError(f"ensemble store {path} has {n} samples but the test split has {x_test.shape[0]}; "
                         "they come from different data")
    if labels is not None and "labels" in ds.variables:
        if not np.array_equal(np.asarray(ds["labels"].values), labels):
            raise ValueError(f"ensemble store {path}: labels differ from the test split's; "
                             "they come from different data")


def _code_metrics(codes: np.ndarray, labels: np.ndarray | None, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Active units, PCs and probe of one set of test codes."""
    probe = cfg["probe"]
    relative, scale = relative_active_units(codes, cfg["relative_active_fraction"])
    row: dict[str, Any] = {
        "n_test": int(codes.shape[0]),
        "active_threshold": float(cfg["active_threshold"]),
        "active_units": active_units(codes, cfg["active_threshold"]),
        "relative_active_fraction": float(cfg["relative_active_fraction"]),
        "active_units_relative": relative,
        "code_scale": scale,
        "pca_variance": float(cfg["pca_variance"]),
        "pcs_99": pcs_for_variance(codes, cfg["pca_variance"]),
        "probe": _probe_description(probe) if labels is not None else "no labels",
        "probe_accuracy": float("nan"),
        "probe_chance": float("nan"),
    }
    if labels is not None:
        row["probe_accuracy"] = cross_validated_probe(
            codes, labels, folds=probe["folds"], seed=cfg["seed"], kind=probe["kind"],
            k=probe["k"], l2=probe["l2"], max_iter=probe["max_iter"])
        row["probe_chance"] = float(np.bincount(labels - labels.min()).max() / len(labels))
    return row


def _mse(recon: np.ndarray, x: np.ndarray) -> float:
    return float(np.mean((recon.astype(np.float64) - x.astype(np.float64)) ** 2))


def eae_metrics(paths: Mapping[str, Path], x_test, labels, cfg) -> dict[str, Any]:
    """Metrics of the EAE: ensemble-mean codes decoded by the trained decoder, and the
    activity of the mean codes and of all latent samples."""
    from eae.support.io import open_ensemble
    from eae.core.models import output_activation_of

    ds = open_ensemble(paths["ensemble"])
    _check_ensemble_matches(ds, x_test, labels, paths["ensemble"])
    stats = ensemble_statistics(paths["ensemble"], cfg["active_threshold"], cfg["chunk_members"])
    decoder = load_model(Path(paths["eae"]) / "decoder.keras")
    z_mean = stats["latent_mean"].astype(np.float32)
    row = _code_metrics(z_mean, labels, cfg)
    row.update(
        model="eae", label=MODEL_LABELS["eae"], latent_dim=stats["latent_dim"],
        n_members=stats["n_members"],
        test_mse=_mse(decode(decoder, z_mean, cfg["batch_size"]), x_test),
        mse_of=f"decoder({output_activation_of(decoder)}) of the ensemble-mean code "
               f"over {stats['n_members']} members",
        active_of="ensemble-mean code",
        active_units_all_samples=active_units_from_variance(stats["variance"], cfg["active_threshold"]),
        active_units_member_mean=float(stats["member_active"].mean()),
        pcs_99_all_samples=pcs_from_covariance(stats["covariance"], cfg["pca_variance"]),
        **_chain_mse(stats["chain_latent_mean"], decoder, x_test, cfg["batch_size"]),
        **store_temperature_columns(ds.attrs),
    )
    return row


def _chain_mse(chain_means: np.ndarray, decoder, x_test, batch_size: int) -> dict[str, float]:
    """Test MSE of each chain's own mean code [C, n, d] (pooled chains that disagree
    decode to a blend none of them would give): min and max over chains."""
    per_chain = [_mse(decode(decoder, z.astype(np.float32), batch_size), x_test)
                 for z in chain_means]
    return {"test_mse_chain_min": float(min(per_chain)),
            "test_mse_chain_max": float(max(per_chain))}


def baseline_metrics(kind: str, model_dir: Path, x_test, labels, cfg) -> dict[str, Any]:
    """Metrics of a trained VAE or AE (VAE: posterior mean decoded, sigmoid output vs x)."""
    from eae.core.models import output_activation_of

    encoder = load_model(Path(model_dir) / "encoder.keras")
    decoder = load_model(Path(model_dir) / "decoder.keras")
    codes = encode(kind, encoder, x_test, cfg["batch_size"])
    row = _code_metrics(codes, labels, cfg)
    act = output_activation_of(decoder)
    row.update(
        model=kind, label=MODEL_LABELS[kind], latent_dim=int(codes.shape[1]),
        test_mse=_mse(decode(decoder, codes, cfg["batch_size"]), x_test),
        mse_of=(f"decoder({act}) of the posterior mean (no sampling)" if kind == "vae"
                else f"decoder({act}) of the code"),
        active_of="posterior mean" if kind == "vae" else "code",
    )
    return row


def model_metrics(dataset: str, paths: Mapping[str, str | os.PathLike],
                  cfg: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per model (``cfg["models"]`` and the PCA reference) for ``dataset``.

    ``paths``: the data store (``data``) and, per model in ``cfg["models"]``, its folder
    (``vae``, ``ae``; the EAE: ``eae`` model folder and ``ensemble`` store), e.g.
    :func:`eae.workflow.image_paths`.
    """
    cfg = resolve_config(cfg)
    p = _resolve_paths(paths)
    _require(p, path_keys(cfg["models"]))
    x_test, labels, _ = load_test_data(p["data"])
    rows = []
    for model in cfg["models"]:
        log.info("metrics %s: %s", dataset, model)
        if model == "eae":
            rows.append(eae_metrics(p, x_test, labels, cfg))
        else:
            rows.append(baseline_metrics(model, p[model], x_test, labels, cfg))
    if cfg["pca_reference"]:
        from eae.experiments.images.data import load_split

        x_train, _ = load_split(p["data"], "train")
        latent = rows[0]["latent_dim"] if rows else 64
        if any(r["latent_dim"] != latent for r in rows):
            log.warning("models differ in latent_dim (%s); PCA uses %d",
                        [r["latent_dim"] for r in rows], latent)
        log.info("metrics %s: PCA-%d reference", dataset, latent)
        rows.append(pca_reference(x_train, x_test, latent, labels, cfg))
    frame = pd.DataFrame(rows)
    frame.insert(0, "dataset", dataset)
    # the EAE row carries its store's measured temperatures; the other models have none
    columns = COLUMNS + TEMPERATURE_COLUMNS
    for col in columns:
        if col not in frame:
            frame[col] = np.nan
    return frame[columns]


def model_inputs(p: Mapping[str, Path], models: Iterable[str]) -> list[Path]:
    """The files the models' scores or figures read (the provenance's inputs): the data
    store, the EAE's decoder and ensemble store, each baseline's encoder and decoder."""
    out = [p["data"]]
    for model in models:
        if model == "eae":
            out += [Path(p["eae"]) / "decoder.keras", p["ensemble"]]
        else:
            out += [Path(p[model]) / "encoder.keras", Path(p[model]) / "decoder.keras"]
    return out


def path_keys(models: Iterable[str]) -> list[str]:
    """The ``paths`` entries that scoring ``models`` needs (names of :data:`PATH_KEYS`)."""
    return ["data"] + [k for m in models for k in (("eae", "ensemble") if m == "eae" else (m,))]


def metrics_stage(dataset: str, cfg: Mapping[str, Any] | None, out_csv: str | os.PathLike,
                  paths: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """Workflow stage ``images_metrics``: :func:`model_metrics` → ``out_csv`` + provenance sidecar."""
    from eae.support.provenance import make_record, now_iso, record_outputs

    started = now_iso()
    full = resolve_config(cfg)
    frame = model_metrics(dataset, paths, full)
    write_csv_atomic(frame, out_csv)
    p = _resolve_paths(paths)
    record = make_record(f"images_metrics_{dataset}", config=full, seeds={"seed": full["seed"]},
                         inputs=model_inputs(p, full["models"]), started=started)
    record_outputs(record, [out_csv])
    log.info("metrics %s:\n%s", dataset, frame.drop(columns=["mse_of", "active_of", "probe"]).to_string(index=False))
    return frame


def __getattr__(name: str) -> Any:
    # ``DEFAULTS`` was a hand-kept copy of the schema's ``analysis`` defaults; it is gone.
    # Code outside the package that still imports it (benchmarks/ensemble_memory.py) gets
    # the schema's, a new dict on each access.
    if name == "DEFAULTS":
        from eae.support.config import section_defaults

        return section_defaults("analysis")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
