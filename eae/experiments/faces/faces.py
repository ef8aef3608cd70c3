"""Faces experiment (SPEC §3.3, paper Section 4.3, Fig 3): convolutional EAEs at
several temperatures, and how "generic" their reconstructions are.

This module gathers the three that hold it: :mod:`eae.experiments.faces.data` (the
store ``results/data/faces.zarr`` from CelebA or the offline LFW faces, stage
``prepare_faces``), :mod:`eae.experiments.faces.eae` (one conv EAE per temperature,
stages ``train_faces_eae`` and ``faces_ensemble``) and :mod:`eae.experiments.faces.report`
(the generic-vs-individual measures, Fig 3 and ``faces.csv``, stage ``faces_report``).
"""

# The faces experiment in three modules (data, EAE, report), so that a data rule does
# not list the trainer as its code; this module re-exports all three (``eae.faces``).
from eae.experiments.faces.data import *  # noqa: F401,F403
from eae.experiments.faces.data import (PIXEL_SCALE, REPORT_DEFAULTS, SOURCES,  # noqa: F401
                                        load_faces_at)
from eae.experiments.faces.eae import *  # noqa: F401,F403
from eae.experiments.faces.eae import _recording  # noqa: F401
from eae.experiments.faces.report import *  # noqa: F401,F403
