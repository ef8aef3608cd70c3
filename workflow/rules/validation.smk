rule validation:
    input:
        code=eae_sources("eae.experiments.sampler_check"),
    output:
        csv=report(
            "results/validation/sampler.csv",
            category="Sampler validation",
            caption="../report/validation.rst",
        ),
        figure=report(
            "results/figures/validation_sampler.png",
            category="Sampler validation",
            caption="../report/validation_figure.rst",
        ),
    log:
        f"{LOGS}/validation.log",
    benchmark:
        f"{BENCHMARKS}/validation.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=2000,
    params:
        cfg={k: v for k, v in config["validation"].items() if k != "enabled"},
    script:
        "../scripts/validation.py"
