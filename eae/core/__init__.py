"""The numerical core: the Simmering sampler, encoder chains, models, the EAE trainer,
ensemble sampling, temperatures and convergence, SINDy. No paths, no workflow."""
