# Ensemble sampling: decoder frozen, M encoder samples -> test-set latents in Zarr.


rule ensemble:
    input:
        data="results/data/{dataset}.zarr",
        model="results/{dataset}/eae/model",
        code=eae_sources("eae.core.ensemble", "eae.experiments.images.eae"),
    output:
        directory("results/{dataset}/eae/ensemble.zarr"),
    log:
        "results/logs/{dataset}/ensemble.log",
    benchmark:
        "results/benchmarks/{dataset}/ensemble.tsv"
    wildcard_constraints:
        dataset="mnist|frey",
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        cfg=lambda wildcards: config[wildcards.dataset]["eae"],
    script:
        "../scripts/ensemble.py"
