"""Settings of the RD coefficient analysis (the ``rd.analysis`` config section) and the
notation the analysis modules share.

Split out of :mod:`eae.experiments.rd.analysis` (which re-exports both names) so that the
helper modules (:mod:`~eae.experiments.rd.coefficient_stats`,
:mod:`~eae.experiments.rd.analysis_figures`, :mod:`~eae.experiments.rd.tables`) can take
an :class:`AnalysisParams` without importing the stage module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from eae.support.settings import settings_from

DOT = "\u0307"  # combining dot above: "z" + DOT renders as ż


@dataclass(frozen=True)
class AnalysisParams:
    """The ``rd.analysis`` config section."""

    threshold: float = 0.1
    kde_grid_points: int = 2048
    kde_max_samples: int = 5000
    n_pairs: int = 2
    model_terms: str = "all"
    n_member_trajectories: int = 5
    integration_rtol: float = 1e-8
    escape_factor: float = 20.0
    min_periods: float = 5.0
    sensitivity_members: int = 200
    omega_tolerance: float = 0.05
    seed: int = 0

    @classmethod
    def from_dict(cls, cfg: Mapping | None) -> "AnalysisParams":
        params = settings_from(cls, cfg, "rd.analysis")
        if params.model_terms not in ("significant", "all"):
            raise ValueError(f"rd.analysis.model_terms must be 'significant' or 'all', "
                             f"got {params.model_terms!r}")
        if params.threshold < 0 or params.kde_grid_points < 16 or params.n_pairs < 1:
            raise ValueError(f"rd.analysis: threshold >= 0, kde_grid_points >= 16 and "
                             f"n_pairs >= 1 required, got {cfg}")
        return params
