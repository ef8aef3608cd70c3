"""Temperature sweep of an experiment: one EAE per temperature (and per annealed run),
each trained, sampled and scored on its own, then one table, figure and recommendation.

Points are named by tags that appear in paths and are reversible (:func:`parse_tag`):

* ``T1e-08`` — constant temperature 1e-8;
* ``anneal_1e-05_1e-09_geometric`` — from 1e-5 to 1e-9 (geometric schedule); the
  ensemble is sampled at the final temperature.

A point's settings (:func:`point_config`) are the experiment's eae config (model,
sampler; ``<experiment>.eae`` for all but faces, see below) with the temperature — and for annealed points ``final_temperature`` and
``schedule`` — replaced, ``sweep.train`` merged over ``<experiment>.eae.train`` and
``sweep.ensemble`` over ``<experiment>.eae.ensemble``. They do not depend on the other
points, so adding a temperature runs only the new point (and the table).

:func:`sweep_point_stage` trains (resuming from a checkpoint), samples the ensemble
and writes one row: test MSE, active units and probe accuracy exactly as Table 1
computes them (:func:`eae.experiments.images.metrics.eae_metrics`), the spread of the members' losses,
R̂ and ESS (:func:`eae.core.diagnostics.convergence_table`) of loss, kinetic temperature
and the latents of a fixed set of test points, the final temperature and the wall
time. :func:`sweep_table_stage` combines the rows into ``sweep.csv``, a Markdown
table, a figure and ``recommended.json`` (:func:`recommend`).

Experiments are registered with :func:`register_experiment`: one function that
trains, samples and scores a point, the names of the input files it reads and the
experiment's eae config a point starts from — ``mnist`` and ``frey``
(``<experiment>.eae``), ``faces`` (the faces run config at the point's temperature,
:func:`eae.experiments.faces.eae.ensemble_config`) and ``rd`` (``rd.eae``, the
SINDy-EAE); :mod:`eae.experiments.sweep.experiments` says what each one's metrics
mean and where they are NaN.
"""

# In modules so that the table's rule lists no training code: a point
# (:mod:`eae.experiments.sweep.points`, with what each experiment runs in
# :mod:`eae.experiments.sweep.experiments`) and the table (:mod:`eae.experiments.sweep.table`).
# The star imports keep every public name of both importable from here (eae.sweep).
from eae.experiments.sweep.points import *  # noqa: F401,F403
from eae.experiments.sweep.table import *  # noqa: F401,F403
from eae.experiments.sweep.experiments import CODE_VARIABLES, METRIC_KEYS, code_variable
from eae.experiments.sweep.points import (  # noqa: F401
    ANALYSIS_KEYS, EXPERIMENTS, OUTPUT_KEYS, _experiment, annealed_runs, annealed_tag,
    constant_tag, ensemble_summary, format_temperature, parse_tag, point_config, point_params,
    point_tags, register_experiment, sweep_point_stage, sweep_points)
from eae.experiments.sweep.table import (ROW_COLUMNS, RULE, convergence_flags, recommend,
                                         sweep_figure, sweep_frame, sweep_markdown,
                                         sweep_table_stage)

__all__ = [
    "EXPERIMENTS",
    "ANALYSIS_KEYS",
    "ROW_COLUMNS",
    "OUTPUT_KEYS",
    "METRIC_KEYS",
    "CODE_VARIABLES",
    "code_variable",
    "register_experiment",
    "format_temperature",
    "constant_tag",
    "annealed_tag",
    "parse_tag",
    "annealed_runs",
    "sweep_points",
    "point_tags",
    "point_config",
    "point_params",
    "ensemble_summary",
    "sweep_point_stage",
    "convergence_flags",
    "recommend",
    "RULE",
    "sweep_frame",
    "sweep_markdown",
    "sweep_figure",
    "sweep_table_stage",
]
