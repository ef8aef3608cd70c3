"""The settings of the Simmering sampler (:class:`SimmeringConfig`) and what follows from
them alone: their validation, the Suzuki–Yoshida orders they accept (with the weights)
and the temperature schedule.

Split from :mod:`eae.core.sampler` (which re-exports every name here) so that the
settings and their checks read, and import, without the integrator: this module
depends on nothing else of the sampler.
"""

from __future__ import annotations

import dataclasses

from eae.support.runtime import tf
from eae.support.settings import settings_from

SCHEDULES = ("constant", "linear", "geometric")
INITIAL_VELOCITIES = ("gaussian", "zero")
THERMOSTATS = ("nhc", "adaptive")
FRICTIONS = ("global", "tensor")

#: Suzuki–Yoshida weights by order (they sum to one).
_W3 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_W5 = 1.0 / (4.0 - 4.0 ** (1.0 / 3.0))
SUZUKI_YOSHIDA = {
    1: (1.0,),
    3: (_W3, 1.0 - 2.0 * _W3, _W3),
    5: (_W5, _W5, 1.0 - 4.0 * _W5, _W5, _W5),
}


@dataclasses.dataclass(frozen=True)
class SimmeringConfig:
    """Settings of the sampler (the paper's names in brackets).

    temperature: target T (initial T when annealing) [thermostat temperature].
    final_temperature: T reached after ``anneal_steps`` steps (None: constant T).
    schedule: "constant", "linear" or "geometric" interpolation to the final T.
    dt: time step [learning rate]. mass: particle mass m [real particle mass].
    chain_length: Nosé–Hoover chain length M; 0 switches the thermostat off (NVE).
    tau: thermostat time scale in units of dt; Q_1 = N_f T τ², Q_j = T τ².
    sy_order: Suzuki–Yoshida order (1, 3 or 5) of the thermostat half steps.
    n_respa: multiple-time-step count n_c of each thermostat half step.
    initial_velocities: "gaussian" (N(0, T/m)) or "zero".
    resample_every: redraw all velocities from N(0, T/m) every n steps (0: never).
    thermostat: "nhc" (the paper's Nosé–Hoover chain) or "adaptive" (adaptive
      Langevin, robust to gradient noise; ``chain_length``, ``sy_order`` and
      ``n_respa`` do not apply; ``tau`` sets the friction's time scale).
    langevin_friction: γ of the adaptive thermostat, per unit time (0: pure
      stochastic-gradient Nosé–Hoover, not ergodic on harmonic problems).
    langevin_every: apply the Langevin noise every k steps (over k·dt), since drawing
      N_f normals costs about one forward/backward pass of a small model.
    friction: "global" (one ξ) or "tensor" (one ξ per parameter tensor).
    """

    temperature: float = 1e-3
    final_temperature: float | None = None
    schedule: str = "constant"
    anneal_steps: int = 0
    dt: float = 1e-3
    mass: float = 1.0
    chain_length: int = 10
    tau: float = 20.0
    sy_order: int = 3
    n_respa: int = 1
    initial_velocities: str = "gaussian"
    resample_every: int = 0
    thermostat: str = "nhc"
    langevin_friction: float = 1.0
    langevin_every: int = 20
    friction: str = "global"

    def __post_init__(self) -> None:
        checks = [
            (self.temperature > 0, "temperature must be > 0"),
            (self.final_temperature is None or self.final_temperature > 0,
             "final_temperature must be > 0"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.anneal_steps >= 0, "anneal_steps must be >= 0"),
            (self.dt > 0, "dt must be > 0"),
            (self.mass > 0, "mass must be > 0"),
            (self.chain_length >= 0, "chain_length must be >= 0"),
            (self.tau > 0, "tau must be > 0"),
            (self.sy_order in SUZUKI_YOSHIDA, "sy_order must be 1, 3 or 5"),
            (self.n_respa >= 1, "n_respa must be >= 1"),
            (self.initial_velocities in INITIAL_VELOCITIES,
             f"initial_velocities must be one of {INITIAL_VELOCITIES}"),
            (self.resample_every >= 0, "resample_every must be >= 0"),
            (self.thermostat in THERMOSTATS, f"thermostat must be one of {THERMOSTATS}"),
            (self.langevin_friction >= 0, "langevin_friction must be >= 0"),
            (self.langevin_every >= 1, "langevin_every must be >= 1"),
            (self.friction in FRICTIONS, f"friction must be one of {FRICTIONS}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SimmeringConfig: {message}")

    @property
    def adaptive(self) -> bool:
        return self.thermostat == "adaptive"

    @classmethod
    def from_dict(cls, cfg: dict, section: str = "sampler") -> "SimmeringConfig":
        """From a ``sampler`` config block; unknown keys raise
        :class:`eae.support.settings.UnknownSettingError` (:func:`eae.support.settings.settings_from`)."""
        return settings_from(cls, cfg, section)


def temperature_at(config: SimmeringConfig, step: tf.Tensor) -> tf.Tensor:
    """Target temperature (float64) after ``step`` steps under the configured schedule."""
    t0 = tf.constant(config.temperature, tf.float64)
    if config.schedule == "constant" or config.final_temperature is None:
        return t0
    t1 = tf.constant(config.final_temperature, tf.float64)
    if config.anneal_steps == 0:
        return t1
    frac = tf.minimum(tf.cast(step, tf.float64) / config.anneal_steps, 1.0)
    if config.schedule == "linear":
        return t0 + (t1 - t0) * frac
    return t0 * tf.pow(t1 / t0, frac)
