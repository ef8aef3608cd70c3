"""The outer loop's settings (:class:`TrainSettings`) and the schedule they fix: how
many Simmering steps make a decoder update, which mini-batches every step and chain
takes (a pure function of the step, so a resumed run needs no RNG state) and over
how many steps the sampler's temperature is annealed.

Split from :mod:`eae.core.trainer` (which re-exports every name here) so that the
settings and the batch schedule read, and import, without the trainer.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from eae.core.sampler_settings import SimmeringConfig
from eae.support.settings import settings_from


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Outer-loop settings of EAE training.

    decoder_updates: number of Adam steps on the decoder.
    encoder_steps: Simmering steps (mini-batches) per decoder update; when None,
      ``encoder_epochs`` passes over the training set are used instead.
    chains: independent encoder chains (own seed, own thermostat, own mini-batches),
      stepped together; the decoder gradient averages over chains and steps.
    anneal_updates: decoder updates over which the sampler's temperature goes from
      ``temperature`` to ``final_temperature`` (None: all of training).
    runaway_factor: stop when the mean T_kin of a round exceeds this × the round's
      highest target T.
    tconf_batch: samples in each of the two independent batches on which the
      configurational temperature is measured once per decoder update (0: not at all);
      see :func:`eae.core.temperature.split_batch_terms`.
    tconf_probes: Hutchinson probes (Hessian-vector products) per measurement.
    rhat_max, ess_min_round: per-round convergence check of the chains' losses (C ≥ 2):
      the log warns when split-R̂ exceeds ``rhat_max`` or the bulk ESS of a round falls
      below ``ess_min_round``.
    """

    decoder_updates: int = 10
    encoder_steps: int | None = 100
    encoder_epochs: float | None = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    seed: int = 0
    chains: int = 1
    anneal_updates: int | None = None
    runaway_factor: float = 100.0
    tconf_batch: int = 128
    tconf_probes: int = 1
    rhat_max: float = 1.01
    ess_min_round: float = 10.0
    log_every_s: float = 5.0
    deterministic: bool = True

    @classmethod
    def from_dict(cls, cfg: dict, section: str = "train", ignore=()) -> "TrainSettings":
        """From a ``train`` config block; unknown keys (bar ``ignore``) raise
        :class:`eae.support.settings.UnknownSettingError` (:func:`eae.support.settings.settings_from`)."""
        return settings_from(cls, cfg, section, ignore)

    def steps_per_update(self, n_train: int) -> int:
        if self.encoder_steps:
            return int(self.encoder_steps)
        if not self.encoder_epochs:
            raise ValueError("set either encoder_steps or encoder_epochs")
        return max(1, int(math.ceil(self.encoder_epochs * batches_per_epoch(n_train, self.batch_size))))


def batches_per_epoch(n: int, batch_size: int) -> int:
    """⌈n / batch⌉ mini-batches cover the training set once (3126 for two epochs of the
    paper's MNIST: 50 000 samples at batch 32)."""
    return max(1, -(-int(n) // int(batch_size)))


def batch_indices(n: int, batch_size: int, seed: int, first_step: int, n_steps: int,
                  chain: int = 0) -> np.ndarray:
    """Indices [n_steps, batch] of the mini-batches for global steps first_step…

    The batches cut one endless stream of permutations of the n samples, each drawn
    from (seed, epoch) — (seed, epoch, chain) for chains after the first —: step k
    takes stream positions [k·B, (k+1)·B), so a partial last batch of an epoch wraps
    into the next permutation and every batch has the same size (one compiled shape).
    The batch at any global step is a pure function of the step: resuming needs no RNG
    state. A batch of at least n is the whole set (one permutation per step).
    """
    b = min(int(batch_size), int(n))
    out = np.empty((n_steps, b), np.int32)
    perms: dict[int, np.ndarray] = {}

    def permutation(epoch: int) -> np.ndarray:
        if epoch not in perms:
            if len(perms) > 2:  # a batch spans at most two epochs
                perms.pop(min(perms))
            key = [seed, epoch] if chain == 0 else [seed, epoch, chain]
            perms[epoch] = np.random.default_rng(key).permutation(n)
        return perms[epoch]

    for i in range(n_steps):
        start = (first_step + i) * b
        first_epoch, offset = divmod(start, n)
        head = permutation(first_epoch)[offset : offset + b]
        out[i, : len(head)] = head
        if len(head) < b:
            out[i, len(head):] = permutation(first_epoch + 1)[: b - len(head)]
    return out


def annealed_sampler_config(config: SimmeringConfig, settings: "TrainSettings",
                            steps_per_update: int) -> SimmeringConfig:
    """The sampler config with its annealing span counted in decoder updates
    (``settings.anneal_updates``, default: all of training) when it anneals at all."""
    if config.final_temperature is None or config.schedule == "constant":
        return config
    updates = settings.anneal_updates
    if updates is None:
        updates = settings.decoder_updates
    return dataclasses.replace(config, anneal_steps=int(updates) * steps_per_update)
