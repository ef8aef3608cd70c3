# Convergence diagnostics (ArviZ) of each experiment's ensemble store: split-R̂, bulk/tail
# ESS, autocorrelation time -> results/<run>/diagnostics.{csv,png}. A run is an image
# dataset (mnist, frey, a datasets: entry), rd, or one faces temperature (faces/eae_T<T>).
# Stores: eae.workflow.ensemble_store.


rule diagnostics:
    input:
        store=lambda wildcards: wf.ensemble_store(wildcards.run),
        code=eae_sources("eae.core.diagnostics"),
    output:
        csv=report(
            "results/{run}/diagnostics.csv",
            category="Convergence diagnostics",
            caption="../report/diagnostics.rst",
        ),
        figure=report(
            "results/{run}/diagnostics.png",
            category="Convergence diagnostics",
            caption="../report/diagnostics_figure.rst",
        ),
    log:
        "results/logs/{run}/diagnostics.log",
    benchmark:
        "results/benchmarks/{run}/diagnostics.tsv"
    wildcard_constraints:
        run=wf.diagnostics_run_pattern(config),
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        cfg=config["diagnostics"],
    script:
        "../scripts/diagnostics.py"
