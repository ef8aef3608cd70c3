"""One scaffold for every EAE experiment: a spec, a training stage and an ensemble stage.

An experiment (MNIST and Frey Faces, the faces of Fig. 3, the SINDy-EAE on
reaction–diffusion) differs from the others only in how it loads its data, builds its
models and loss, and what each ensemble member records. That is an
:class:`ExperimentSpec`; the stages around it are written once (the ensemble stage
lives in :mod:`eae.core.ensemble`, so that editing it reruns no training):

* :func:`train_stage` — build the trainer, fingerprint the run (settings, data checksum,
  code), fit with checkpoints and resume, save the models and final state, write one
  provenance record;
* :func:`eae.core.ensemble.ensemble_stage` — rebuild the trainer, continue the thermostat chain from the
  final state with the decoder frozen, record each member into a Zarr store
  (:func:`eae.core.ensemble.sample_ensemble`) with its provenance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

logger = logging.getLogger("eae")


class Recording(NamedTuple):
    """What an experiment's ensemble stores: ``record()`` per member (see
    :data:`eae.core.ensemble.Record`), the ``static`` variables and coords written once, and
    the names whose ensemble mean is stored as ``<name>_mean``."""

    record: Callable[[], Mapping[str, tuple]]
    static: Any  # xr.Dataset
    mean_of: tuple[str, ...]


@dataclass(frozen=True)
class ExperimentSpec:
    """An EAE experiment as the generic stages need it.

    ``trainer(cfg, data_path) -> (EAETrainer, splits)`` builds the trainer from the
    experiment's EAE config block; ``recording(trainer, splits, cfg, data_path) ->
    Recording`` says what each ensemble member records. ``module`` is the eae module
    that defines the experiment: its import closure is the code hashed into checkpoint
    fingerprints and provenance records. ``train_sections`` are the config sections
    training depends on (the rest, e.g. ``ensemble``, only matters after training).
    ``train_name`` / ``ensemble_name`` name the stages in provenance records.
    ``describe(trainer, splits, cfg)`` returns the line logged before training;
    ``final_summary(history)`` extra fields for the training record.
    """

    name: str
    module: str
    trainer: Callable[[Mapping[str, Any], Any], tuple[Any, Any]]
    recording: Callable[[Any, Any, Mapping[str, Any], Any], Recording]
    train_name: str
    ensemble_name: str
    describe: Callable[[Any, Any, Mapping[str, Any]], str] | None = None
    final_summary: Callable[[Any], Mapping[str, Any]] | None = None

    def train_config(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """What training depends on (its fingerprint and record): ``cfg`` without its
        ``ensemble`` block, so that new ensemble settings retrain nothing."""
        return {k: v for k, v in cfg.items() if k != "ensemble"}


def train_stage(spec: ExperimentSpec, cfg: Mapping[str, Any], data_path, out_dir,
                checkpoint_dir=None, stop_after: int | None = None):
    """Train (or resume) an experiment's EAE; returns the history DataFrame.

    Writes into ``out_dir``: encoder.keras, decoder.keras, final_state.npz (the full
    final state, thermostat included, from which :func:`eae.core.ensemble.ensemble_stage` continues the
    chain) and history.csv; the provenance record goes to the sidecars of ``out_dir``
    and its history. The running checkpoint lives in ``checkpoint_dir`` (default
    ``out_dir``): keep it outside a Snakemake ``directory()`` output so a killed job
    resumes; one made with other settings, data or code is ignored
    (:meth:`eae.core.trainer.EAETrainer.fit`). ``stop_after`` ends the call after that many
    decoder updates (tests simulate a killed job with it).
    """
    from eae.support.provenance import make_record, now_iso, record_outputs
    from eae.core.trainer import stage_fingerprint, stage_seeds

    started = now_iso()
    out = Path(out_dir)
    cfg = dict(cfg)
    trainer, splits = spec.trainer(cfg, data_path)
    train_cfg = spec.train_config(cfg)
    fingerprint = stage_fingerprint(train_cfg, data_path, spec.module)
    if spec.describe is not None:
        logger.info("%s", spec.describe(trainer, splits, cfg))
    history = trainer.fit(out, checkpoint_dir, stop_after=stop_after, fingerprint=fingerprint)
    if trainer.update < trainer.settings.decoder_updates:
        return history  # stopped early on request: no final models
    trainer.save_models(out)
    extra = dict(spec.final_summary(history)) if spec.final_summary is not None else None
    record = make_record(spec.train_name, config=train_cfg, seeds=stage_seeds(cfg),
                         inputs=[data_path], started=started, modules=[spec.module],
                         extra=extra)
    record_outputs(record, [out, out / "history.csv"])
    return history
