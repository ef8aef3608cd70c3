# EAE training (Algorithm 1) of the image experiments: results/{dataset}/eae/model/.
# The checkpoint lives outside the directory() output, in results/checkpoints/, because
# Snakemake deletes the outputs of an incomplete job before rerunning it; a checkpoint
# made with other settings or data is ignored, so it never resumes a stale run.


rule train_eae:
    input:
        data="results/data/{dataset}.zarr",
        code=eae_sources("eae.experiments.images.eae"),
    output:
        directory("results/{dataset}/eae/model"),
    log:
        "results/logs/{dataset}/train_eae.log",
    benchmark:
        "results/benchmarks/{dataset}/train_eae.tsv"
    wildcard_constraints:
        dataset="mnist|frey",
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        cfg=lambda wildcards: eae_training_cfg(wildcards.dataset),
        checkpoint_dir="results/checkpoints/{dataset}/eae",
    script:
        "../scripts/train_eae.py"
