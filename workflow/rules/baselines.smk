# Baseline autoencoders (SPEC §3.2): a β-VAE and a vanilla AE per dataset,
# results/{dataset}/{model}/ with encoder.keras, decoder.keras, history.csv and
# provenance.json. Settings: config[dataset][model] (schemas/baselines.schema.yaml).
#
# The training checkpoint lives OUTSIDE the rule's directory() output, in
# results/checkpoints/{dataset}/{model}/: Snakemake deletes the outputs of a failed or
# incomplete job before rerunning it, and the checkpoint must survive that so a killed
# job resumes. It is not declared to Snakemake; delete it to force training from scratch
# (a checkpoint made with another config, seed or data set is ignored automatically).


wildcard_constraints:
    model="vae|ae",


rule train_baseline:
    input:
        data="results/data/{dataset}.zarr",
        code=eae_sources("eae.experiments.images.baselines"),
    output:
        directory("results/{dataset}/{model}"),
    log:
        "results/logs/{dataset}/train_{model}.log",
    benchmark:
        "results/benchmarks/{dataset}/train_{model}.tsv"
    wildcard_constraints:
        dataset="mnist|frey",
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        cfg=baseline_cfg,
        checkpoint_dir="results/checkpoints/{dataset}/{model}",
    script:
        "../scripts/train_baseline.py"
