# The results as one RO-Crate (eae.support.archive; Workflow Run Crate / Provenance Run Crate
# profiles): every file below results/ (checkpoints and results/archive/ excluded) with
# its sha256 in ro-crate-metadata.json, the workflow, the resolved config, a pip freeze
# of the environment and one CreateAction per job, made from the provenance records
# (sidecars in results/provenance/, Zarr attrs). Check it with
# `eae archive verify results/archive/eae-results.tar.gz`.
# Not part of the default target: run `snakemake archive`.
# the folder of the Snakefile (this file is workflow/rules/archive.smk)
WORKFLOW_DIR = Path(workflow.current_basedir).parents[1]


rule archive:
    input:
        targets=all_targets(),
        code=eae_sources("eae.support.archive"),
        workflow=[str(WORKFLOW_DIR / path) for path in wf.workflow_files(WORKFLOW_DIR)],
    output:
        "results/archive/eae-results.tar.gz",
    log:
        f"{LOGS}/archive.log",
    benchmark:
        f"{BENCHMARKS}/archive.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        cfg=config,
        # the Snakefile is the first workflow file
        workflow_dir=lambda wildcards, input: str(Path(input.workflow[0]).parent),
        # every rule's output paths as Snakemake matches them (regular expressions with
        # the wildcard constraints): the archive ties each job to the rule that made it
        rules=lambda wildcards: {
            r.name: [o.regex().pattern for o in r.output] for r in workflow.rules
        },
        # the archive must not hold its own (growing) log nor a stale benchmark of itself
        exclude=[f"{LOGS}/archive.log", f"{BENCHMARKS}/archive.tsv"],
    script:
        "../scripts/archive.py"
