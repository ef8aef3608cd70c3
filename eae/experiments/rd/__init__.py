"""Reaction–diffusion: simulation, dataset, the SINDy-EAE, Table 4 and its analysis."""
