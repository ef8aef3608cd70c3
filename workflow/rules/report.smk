# What `snakemake --report results/report.zip` adds beside the tables and figures: the
# resolved configuration and every provenance record (the report renders neither itself).


rule report_config:
    input:
        code=eae_sources("eae.support.config"),
    output:
        report(
            "results/report/config.resolved.yaml",
            category="Provenance",
            caption="../report/config.rst",
        ),
    log:
        f"{LOGS}/resolved_config.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=500,
    params:
        cfg=config,
    script:
        "../scripts/report_config.py"


rule report_provenance:
    input:
        code=eae_sources("eae.support.provenance"),
        results=result_targets,
    output:
        report(
            "results/report/provenance.json",
            category="Provenance",
            caption="../report/provenance.rst",
        ),
    log:
        f"{LOGS}/provenance_records.log",
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../scripts/report_provenance.py"
