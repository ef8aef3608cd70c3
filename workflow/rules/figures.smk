# Figures of the image experiments (SPEC §3.2, paper Figs 2 and 5), under results/figures/:
# {dataset}_latent_densities.png and {dataset}_samples.png for every image dataset, and
# {dataset}_interpolation.png for labelled ones (MNIST). Settings: config["analysis"].
# Uses analysis_input_files from metrics.smk (include that first).


rule figures_images:
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
    wildcard_constraints:
        dataset="mnist|frey",
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=6000,
    params:
        cfg=config["analysis"],
    script:
        "../scripts/figures_images.py"


rule figure_interpolation:
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
        dataset="mnist",  # needs class labels (Frey Faces has none)
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        cfg=config["analysis"],
    script:
        "../scripts/figures_images.py"
