# The image experiments (SPEC §3.2; eae.experiments.images): MNIST and Frey Faces, each
# a top-level config section, and every entry of the datasets: section (its data
# preparation is in datasets.smk) ({dataset} = mnist | frey | <datasets entry>).
#
#   images_download_{mnist,frey}  resources/<raw file>, checksummed (head node, once)
#   images_prepare_{mnist,frey}   results/data/{dataset}.zarr
#   images_train_eae              results/{dataset}/eae/model/          (Algorithm 1)
#   images_ensemble               results/{dataset}/eae/ensemble.zarr   (decoder frozen)
#   images_train_baseline         results/{dataset}/{vae,ae}/
#   images_metrics                results/{dataset}/metrics.csv         (Table 1 rows)
#   images_table1                 results/tables/table1.{csv,md}
#   images_figures                results/figures/{dataset}_{latent_densities,samples}.png
#   images_interpolation          results/figures/{dataset}_interpolation.png (needs labels)
#
# Training checkpoints live OUTSIDE the directory() outputs, in results/checkpoints/:
# Snakemake deletes the outputs of an incomplete job before rerunning it, and the
# checkpoint must survive that so a killed job resumes. A checkpoint made with other
# settings or data is ignored, so it never resumes a stale run. Settings:
# config[dataset] (schemas/{mnist,frey}_data, eae, baselines) or config["datasets"][dataset]
# (schemas/datasets) and config["analysis"], sliced by eae.workflow.


wildcard_constraints:
    dataset=wf.wildcard_pattern(wf.image_datasets(config)),
    model="vae|ae",


rule images_download_mnist:
    output:
        "resources/mnist.npz",
    log:
        "results/logs/data/download_mnist.log",
    retries: 2
    localrule: True
    conda:
        "../../environment.yml"
    params:
        url=config["mnist"]["data"]["url"],
        sha256=config["mnist"]["data"]["sha256"],
    script:
        "../scripts/images_download.py"


rule images_download_frey:
    output:
        "resources/frey_rawface.mat",
    log:
        "results/logs/data/download_frey.log",
    retries: 2
    localrule: True
    conda:
        "../../environment.yml"
    params:
        url=config["frey"]["data"]["url"],
        sha256=config["frey"]["data"]["sha256"],
    script:
        "../scripts/images_download.py"


rule images_prepare_mnist:
    input:
        unpack(lambda wildcards: wf.mnist_raw_input(config)),
        code=eae_sources("eae.experiments.images.data"),
    output:
        directory("results/data/mnist.zarr"),
    log:
        "results/logs/data/prepare_mnist.log",
    benchmark:
        "results/benchmarks/data/prepare_mnist.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        cfg=config["mnist"]["data"],
        resources=wf.RESOURCES,
    script:
        "../scripts/images_prepare_mnist.py"


rule images_prepare_frey:
    input:
        unpack(lambda wildcards: wf.frey_raw_input(config)),
        code=eae_sources("eae.experiments.images.data"),
    output:
        directory("results/data/frey.zarr"),
    log:
        "results/logs/data/prepare_frey.log",
    benchmark:
        "results/benchmarks/data/prepare_frey.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        cfg=config["frey"]["data"],
        resources=wf.RESOURCES,
    script:
        "../scripts/images_prepare_frey.py"


rule images_train_eae:
    input:
        data="results/data/{dataset}.zarr",
        code=eae_sources("eae.experiments.images.eae"),
    output:
        directory("results/{dataset}/eae/model"),
    log:
        "results/logs/{dataset}/train_eae.log",
    benchmark:
        "results/benchmarks/{dataset}/train_eae.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        cfg=lambda wildcards: wf.images_train_cfg(config, wildcards.dataset),
        checkpoint_dir="results/checkpoints/{dataset}/eae",
    script:
        "../scripts/images_train_eae.py"


rule images_ensemble:
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
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        cfg=lambda wildcards: wf.images_ensemble_cfg(config, wildcards.dataset),
    script:
        "../scripts/images_ensemble.py"


rule images_train_baseline:
    input:
        data="results/data/{dataset}.zarr",
        code=eae_sources("eae.experiments.images.baselines"),
    output:
        directory("results/{dataset}/{model}"),
    log:
        "results/logs/{dataset}/train_{model}.log",
    benchmark:
        "results/benchmarks/{dataset}/train_{model}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        cfg=lambda wildcards: wf.baseline_cfg(
            config, wildcards.dataset, wildcards.model
        ),
        checkpoint_dir="results/checkpoints/{dataset}/{model}",
    script:
        "../scripts/images_train_baseline.py"


rule images_metrics:
    input:
        unpack(analysis_input_files),
        code=eae_sources("eae.experiments.images.metrics"),
    output:
        "results/{dataset}/metrics.csv",
    log:
        "results/logs/{dataset}/metrics.log",
    benchmark:
        "results/benchmarks/{dataset}/metrics.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=6000,
    params:
        cfg=wf.metrics_cfg(config),
    script:
        "../scripts/images_metrics.py"


rule images_table1:
    input:
        csvs=lambda wildcards: expand(
            "results/{dataset}/metrics.csv", dataset=enabled_image_datasets()
        ),
        code=eae_sources("eae.experiments.images.metrics"),
    output:
        csv=report(
            "results/tables/table1.csv",
            category="Images (MNIST, Frey Faces)",
            caption="../report/table1.rst",
        ),
        md="results/tables/table1.md",
    log:
        "results/logs/table1.log",
    benchmark:
        "results/benchmarks/table1.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../scripts/images_table1.py"


rule images_figures:
    input:
        unpack(analysis_input_files),
        code=eae_sources("eae.experiments.images.figures"),
    output:
        densities=report(
            "results/figures/{dataset}_latent_densities.png",
            category="Images (MNIST, Frey Faces)",
            caption="../report/figure_densities.rst",
        ),
        samples=report(
            "results/figures/{dataset}_samples.png",
            category="Images (MNIST, Frey Faces)",
            caption="../report/figure_samples.rst",
        ),
    log:
        "results/logs/{dataset}/figures_images.log",
    benchmark:
        "results/benchmarks/{dataset}/figures_images.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=6000,
    params:
        cfg=config["analysis"],
    script:
        "../scripts/images_figures.py"


rule images_interpolation:
    input:
        unpack(analysis_input_files),
        code=eae_sources("eae.experiments.images.figures"),
    output:
        interpolation=report(
            "results/figures/{dataset}_interpolation.png",
            category="Images (MNIST, Frey Faces)",
            caption="../report/figure_interpolation.rst",
        ),
    log:
        "results/logs/{dataset}/figure_interpolation.log",
    benchmark:
        "results/benchmarks/{dataset}/figure_interpolation.tsv"
    wildcard_constraints:
        dataset=wf.wildcard_pattern(wf.labelled_image_datasets(config)),  # needs class labels
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        cfg=config["analysis"],
    script:
        "../scripts/images_figures.py"
