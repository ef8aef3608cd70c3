# Table 1 of the image experiments (SPEC §3.2): per dataset results/{dataset}/metrics.csv
# (test MSE, active units, PCs holding 99 % of the code variance, label probe, for the
# EAE, the VAE, the vanilla AE and a PCA reference), then results/tables/table1.{csv,md}
# over the enabled datasets. Settings: config["analysis"] (schemas/analysis.schema.yaml).
# Needs enabled_image_datasets() from common.smk.


rule metrics:
    input:
        unpack(analysis_input_files),
        code=eae_sources("eae.experiments.images.metrics"),
    output:
        "results/{dataset}/metrics.csv",
    log:
        "results/logs/{dataset}/metrics.log",
    benchmark:
        "results/benchmarks/{dataset}/metrics.tsv"
    wildcard_constraints:
        dataset="mnist|frey",
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=6000,
    params:
        cfg={k: config["analysis"][k] for k in TABLE1_SETTINGS},
    script:
        "../scripts/metrics.py"


rule table1:
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
        "../scripts/table1.py"
