# Entropic Autoencoders: from simulation and data to every table and figure.
# This file only includes the stages and names the final target; see workflow/rules/.
from snakemake.utils import min_version

min_version("9.11")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/validation.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/ensemble.smk"
include: "workflow/rules/diagnostics.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/faces.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/archive.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/prepare_rd.smk"
include: "workflow/rules/sindy.smk"
include: "workflow/rules/rd_analysis.smk"
include: "workflow/rules/sweep.smk"


rule all:
    default_target: True
    input:
        all_targets(),
