"""Your own datasets: the ``datasets:`` config section (name → entry).

Each entry is read by :mod:`~eae.experiments.datasets.sources` (.npz / .npy, Zarr,
NetCDF or a folder of PNG/JPEG images), checked and prepared into a store by
:mod:`~eae.experiments.datasets.prepare` (stage ``datasets_prepare``), and from there
runs the image chain of the MNIST experiment (:mod:`eae.experiments.images`): EAE,
ensemble, VAE and AE baselines, PCA, Table 1, figures, diagnostics and the sweep.
"""

from eae.experiments.datasets.names import RESERVED_NAMES, check_name

__all__ = ["RESERVED_NAMES", "check_name"]
