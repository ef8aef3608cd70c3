"""Snakemake wrapper: rule diagnostics (see eae.diagnostics.diagnostics_stage)."""

from eae.core.diagnostics import diagnostics_stage
from eae.support.progress import setup_logging
from eae.support.provenance import make_record, now_iso

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
cfg = dict(snakemake.params.cfg)  # noqa: F821
started = now_iso()
diagnostics_stage(
    snakemake.input.store,  # noqa: F821
    snakemake.output.csv,  # noqa: F821
    snakemake.output.figure,  # noqa: F821
    rhat_max=cfg["rhat_max"],
    ess_min=cfg["ess_min"],
    between_max=cfg["between_share_max"],
    max_elements=cfg["max_elements"],
    provenance=make_record("diagnostics", config=cfg, inputs=[snakemake.input.store],  # noqa: F821
                           started=started, modules=["eae.core.diagnostics"]),
)
