"""Entropic Autoencoders: encoder ensembles sampled by a Nosé–Hoover chain thermostat."""

__version__ = "0.1.0"
