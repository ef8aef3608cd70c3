"""Entropic Autoencoders: encoder ensembles sampled by a Nosé–Hoover chain thermostat.

``eae.fit`` and ``eae.load`` (:mod:`eae.api`) are imported on first use, so that
``import eae`` stays light: TensorFlow starts only when a model is built.
"""

__version__ = "0.1.0"

#: names of :mod:`eae.api` reachable as ``eae.<name>``
_API = ("fit", "load", "EAEModel")


def __getattr__(name):
    if name in _API or name == "api":
        import importlib

        # not ``from eae import api``: that asks this very function for ``api`` first
        api = importlib.import_module("eae.api")
        return api if name == "api" else getattr(api, name)
    # AttributeError lets ``from eae import <submodule>`` fall back to importing it
    raise AttributeError(f"module 'eae' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
