rule validation:
    input:
        code=eae_sources("eae.validation"),
    output:
        csv="results/validation/sampler.csv",
        figure="results/figures/validation_sampler.png",
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
        cfg=config["validation"],
    script:
        "../scripts/validation.py"
