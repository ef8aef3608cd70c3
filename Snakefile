# Entropic Autoencoders: from simulation and data to every table and figure.
# This file only includes the stages and names the final target; see workflow/rules/.
from snakemake.utils import min_version

min_version("9.11")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/sampler_check.smk"
include: "workflow/rules/images.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/faces.smk"
include: "workflow/rules/rd.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/diagnostics.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/archive.smk"


rule all:
    default_target: True
    input:
        all_targets(),
