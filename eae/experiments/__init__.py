"""The experiments of the paper, each on the scaffold of :mod:`eae.experiments.base`."""
