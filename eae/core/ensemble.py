"""Ensemble sampling: freeze the decoder, keep Simmering the encoder, stream to Zarr.

After training, consecutive encoder samples (every ``thin``-th Simmering step) of
each of the trainer's chains form the ensemble. For each draw a ``record`` function
computes what the experiment needs (test-set latents, SINDy coefficients, …) for all
chains at once; draws are written in chunks along the ``draw`` dimension of
``(chain, draw, …)`` variables, and running means are accumulated in float64, so
memory does not grow with M.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import xarray as xr

from eae.support.io import ZarrStreamWriter
from eae.support.progress import Progress
from eae.core import sampler as simmering
from eae.core.temperature import ensemble_temperatures, remedy
from eae.core.trainer import EAETrainer

logger = logging.getLogger("eae")

#: record() -> {name: (dims without "chain"/"draw", array with a leading chain axis)}
Record = Callable[[], Mapping[str, tuple[tuple[str, ...], np.ndarray]]]


def draws_per_chain(n_members: int, chains: int) -> int:
    """Draws each chain contributes so that chains × draws ≥ ``n_members``."""
    return max(1, -(-int(n_members) // int(chains)))


#: default draws per chain with a T_conf measurement (schema: ensemble.tconf_draws)
TCONF_DRAWS = 100


def sample_ensemble(
    trainer: EAETrainer,
    record: Record,
    out_path,
    n_members: int,
    thin: int = 1,
    chunk_members: int = 50,
    mean_of: tuple[str, ...] = (),
    static: xr.Dataset | None = None,
    provenance: Mapping | None = None,
    log_every_s: float = 5.0,
    history=None,
    burn_in: int = 0,
    tconf_draws: int = TCONF_DRAWS,
):
    """Draw ``n_members`` encoder samples with the decoder frozen and stream them.

    The trainer's C chains each contribute ``ceil(n_members / C)`` draws (every
    ``thin``-th Simmering step), so the store's per-sample variables have dims
    ``(chain, draw, …)`` — what ArviZ reads — and ``chain × draw`` members in all.
    Per draw the store holds what ``record`` returns (arrays with a leading chain
    axis) plus ``loss`` (mini-batch loss at the sample) and ``kinetic_temperature``;
    ``<name>_mean`` (mean over all chains and draws) is added for each name in
    ``mean_of``. ``static`` variables (coords, labels) are written once.
    ``provenance`` may be a callable, evaluated at the end (so its finish time is the
    store's). ``history``: training's history.csv (path or DataFrame); the store's attrs
    then carry training's measured temperatures (``train_…``) beside the draws'
    (``ensemble_…``, :mod:`eae.core.temperature`). T_conf costs about three gradients per
    measurement, so it is measured on ``tconf_draws`` evenly spaced draws per chain (all
    draws when there are fewer; 0: none); ``grad_sq`` and ``curvature`` are NaN on the
    other draws, and the pooled T_conf is taken over the measured ones. Use :func:`eae.support.io.member_view` to read the members as one ``member`` axis.
    """
    if trainer.state is None:
        trainer.initialize()
    chains = trainer.chains
    n_draws = draws_per_chain(n_members, chains)
    chunk_draws = max(1, chunk_members // chains)
    coords = {"chain": np.arange(chains)}
    static = static.assign_coords(coords) if static is not None else xr.Dataset(coords=coords)
    writer = ZarrStreamWriter(out_path, "draw", static=static)
    sums: dict[str, np.ndarray] = {}
    dims: dict[str, tuple[str, ...]] = {}
    buffer: list[dict] = []
    progress = Progress(n_draws, f"ensemble ({chains} chain{'s' if chains > 1 else ''})",
                        logger, log_every_s)
    step = int(trainer.state.step)
    target = float(simmering.temperature_at(trainer.sampler_config, trainer.state.step))
    # T_conf is measured only where the trainer measures it at all (tconf_batch > 0)
    measured = measured_draws(n_draws, tconf_draws if trainer.settings.tconf_batch else 0)
    try:
        step = _burn_in(trainer, step, int(burn_in), logger, log_every_s)
        for draw in range(n_draws):
            idx = trainer.indices_for(step, thin)
            trainer.state, info, _ = trainer._round(trainer.state, idx, accumulate=False)
            trainer.check_diagnostics(info)  # NaN or runaway T_kin: stop before writing a bad draw
            step += thin
            values = dict(record())
            for name in mean_of:
                d, arr = values[name]
                dims[name] = d
                sums[name] = sums.get(name, 0.0) + np.asarray(arr, np.float64).sum(axis=0)
            values["loss"] = ((), np.asarray(info.loss.numpy()[-1]))
            values["kinetic_temperature"] = ((), np.asarray(info.kinetic_temperature.numpy()[-1]))
            # ‖θ − θ₀‖ against the global step: does the ensemble stay put (eae.wellposed)?
            values["param_displacement"] = ((), trainer.displacement())
            values["step"] = ((), np.full(chains, step, np.int64))
            if measured:
                conf = (trainer.measure_configurational(_CONF_KEY + step) if draw in measured
                        else (np.full(chains, np.nan),) * 2)
                values["grad_sq"], values["curvature"] = ((), conf[0]), ((), conf[1])
            buffer.append(values)
            if len(buffer) == chunk_draws or draw == n_draws - 1:
                writer.append(_stack(buffer, draw + 1 - len(buffer)))
                buffer = []
            progress.update(draw + 1, f"loss {float(np.mean(values['loss'][1])):.4g}")
        total = n_draws * chains
        means = xr.Dataset({f"{name}_mean": (dims[name], (sums[name] / total).astype(np.float32))
                            for name in mean_of})
        attrs = {"n_members": total, "chains": chains, "draws": n_draws, "thin": thin,
                 "burn_in": int(burn_in), "temperature": target,
                 "tconf_draws": len(measured)}
        attrs.update(_temperature_attrs(writer, target, trainer.sampler_config))
        attrs.update(_wellposed_attrs(writer.written(), "ensemble_", "ensemble sampling"))
        if history is not None:
            attrs.update(_training_attrs(history))
        return writer.close(extra=means if mean_of else None, attrs=attrs,
                            provenance=provenance() if callable(provenance) else provenance)
    except BaseException:
        writer.abort()
        raise


def measured_draws(n_draws: int, tconf_draws: int) -> frozenset[int]:
    """The draws (of ``n_draws`` per chain) on which T_conf is measured: ``tconf_draws``
    evenly spaced ones, the last draw included (all when there are fewer; none for 0)."""
    if tconf_draws <= 0:
        return frozenset()
    if tconf_draws >= n_draws:
        return frozenset(range(n_draws))
    return frozenset(np.unique(np.round(np.linspace(n_draws - 1, 0, tconf_draws,
                                                    endpoint=False))).astype(int).tolist())


def sampling_options(ens) -> dict:
    """The keyword settings of :func:`sample_ensemble` that an experiment's ``ensemble``
    config block holds beside members / thin / chunk_members."""
    return {"burn_in": int(ens.get("burn_in", 0)),
            "tconf_draws": int(ens.get("tconf_draws", TCONF_DRAWS))}


def _burn_in(trainer: EAETrainer, step: int, n_steps: int, log, log_every_s: float) -> int:
    """``n_steps`` unrecorded Simmering steps (rounds of at most 100); the next step."""
    if n_steps <= 0:
        return step
    progress = Progress(n_steps, "ensemble burn-in", log, log_every_s)
    done = 0
    while done < n_steps:
        n = min(100, n_steps - done)
        trainer.state, info, _ = trainer._round(trainer.state, trainer.indices_for(step, n),
                                                accumulate=False)
        trainer.check_diagnostics(info)
        step += n
        done += n
        progress.update(done, f"loss {float(np.mean(info.loss.numpy()[-1])):.4g}")
    return step


#: T_conf batches of ensemble draws are keyed apart from training's (keyed by update)
_CONF_KEY = 1 << 40


def _temperature_attrs(writer, target: float, config) -> dict:
    """Pooled T_kin/T and T_conf/T of the draws written so far, with a log warning (cause
    and remedy) when they leave the bands of :mod:`eae.core.temperature`."""

    ds = writer.written().assign_attrs(temperature=target)
    check = ensemble_temperatures(ds)
    if check.flagged:
        logger.warning("ensemble not at its target T = %.3g: %s; likely cause: %s", target,
                       "; ".join(check.reasons), remedy(config.thermostat, config.chain_length, check))
    logger.info("ensemble temperatures: T_kin/T %.3f, T_conf/T %.3f", check.kinetic,
                check.configurational)
    return check.as_attrs("ensemble_")


def _training_attrs(history) -> dict:
    import pandas as pd

    from eae.core.temperature import training_temperatures
    from eae.core.wellposed import slope_attrs, training_slopes

    if not isinstance(history, pd.DataFrame):
        history = pd.read_csv(history)
    return {**training_temperatures(history).as_attrs("train_"),
            **slope_attrs("train_", training_slopes(history))}


def _wellposed_attrs(ds, prefix: str, phase: str) -> dict:
    """Slope of ‖θ − θ₀‖ over the last half of the draws, with a log warning when the
    ensemble keeps spreading (an improper exp(−L/T), :mod:`eae.core.wellposed`)."""
    from eae.core.wellposed import IMPROPER_SLOPE, ensemble_slopes, slope_attrs

    attrs = slope_attrs(prefix, ensemble_slopes(ds))
    slope = attrs[f"{prefix}displacement_slope"]
    if np.isfinite(slope) and slope > IMPROPER_SLOPE:
        logger.warning("improper ensemble: during %s ‖θ − θ₀‖ keeps growing (log–log slope "
                       "%.2f > %.2f against steps), so the members are no draws of a "
                       "stationary ensemble: either exp(−L/T) does not confine the encoder "
                       "at this T (free diffusion; lower sampler.temperature) or the encoder "
                       "is still drifting downhill (not relaxed; more steps)", phase, slope,
                       IMPROPER_SLOPE)
    return attrs


def _stack(buffer: list[dict], first_draw: int) -> xr.Dataset:
    data = {}
    for name in buffer[0].keys():
        d = buffer[0][name][0]
        data[name] = (("chain", "draw") + tuple(d),
                      np.stack([np.asarray(b[name][1]) for b in buffer], axis=1))
    draws = np.arange(first_draw, first_draw + len(buffer))
    return xr.Dataset(data, coords={"draw": draws})


def final_state_path(train_dir) -> Path:
    """The trained state an ensemble continues from, checked to exist."""
    path = Path(train_dir) / "final_state.npz"
    if not path.exists():
        raise FileNotFoundError(f"no trained state at {path} (run the training stage first)")
    return path


def ensemble_stage(spec, cfg: Mapping[str, Any], data_path, train_dir,
                   out_path):
    """Sample an experiment's ensemble: members of the encoder with the decoder frozen,
    continuing the thermostat chain where training ended, each recorded as the spec
    says, streamed to the Zarr store ``out_path`` (:func:`sample_ensemble`, settings from
    ``cfg["ensemble"]``). ``spec`` is an experiment spec (the experiments' scaffold):
    ``trainer(cfg, data_path)``, ``recording(trainer, splits, cfg, data_path)``, the
    ``module`` hashed into the record and the record's stage name ``ensemble_name``."""
    from eae.core.trainer import stage_seeds
    from eae.support.provenance import make_record, now_iso

    started = now_iso()
    cfg = dict(cfg)
    state = final_state_path(train_dir)
    trainer, splits = spec.trainer(cfg, data_path)
    trainer.load_checkpoint(state)
    recording = spec.recording(trainer, splits, cfg, data_path)
    ens = cfg["ensemble"]

    def provenance():  # evaluated when the store is complete
        return make_record(spec.ensemble_name, config=cfg, seeds=stage_seeds(cfg),
                           inputs=[data_path, train_dir], started=started,
                           modules=[spec.module, "eae.core.ensemble"])

    return sample_ensemble(trainer, recording.record, out_path, n_members=int(ens["members"]),
                           thin=int(ens["thin"]), chunk_members=int(ens["chunk_members"]),
                           mean_of=recording.mean_of, static=recording.static,
                           provenance=provenance, history=Path(train_dir) / "history.csv",
                           **sampling_options(ens))
