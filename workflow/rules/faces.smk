# Faces experiment (SPEC §3.3, paper Fig 3): results/data/faces.zarr (CelebA or the
# offline lfw_subset faces), one convolutional EAE per temperature in
# config["faces"]["temperatures"] under results/faces/eae_T{temperature}/ (the
# temperature as eae.faces.temperature_tag writes it, e.g. eae_T1e-05), their test-face
# ensembles, then results/figures/faces_fig3.png and results/tables/faces.csv.
# Settings: config["faces"] (schemas/faces.schema.yaml). eae.workflow.faces_targets(
# config) lists what the config asks for (nothing when faces.enabled is false).
#
# Training checkpoints live OUTSIDE the directory() outputs, in results/checkpoints/faces/:
# Snakemake deletes the outputs of an incomplete job before rerunning it, and the
# checkpoint must survive that so a killed job resumes. A checkpoint made with other
# settings or data is ignored automatically. Each model's params hold only its own
# settings (eae.workflow.faces_train_cfg), so adding a temperature retrains nothing else.


wildcard_constraints:
    temperature="[0-9.eE+-]+",


rule faces_prepare:
    input:
        unpack(lambda wildcards: wf.faces_raw_inputs(config)),
        code=eae_sources("eae.experiments.faces.data"),
    output:
        directory("results/data/faces.zarr"),
    log:
        "results/logs/data/prepare_faces.log",
    benchmark:
        "results/benchmarks/data/prepare_faces.tsv"
    conda:
        "../../environment.yml"
    threads: 4
    resources:
        mem_mb=4000,
    params:
        cfg=config["faces"]["data"],
    script:
        "../scripts/faces_prepare.py"


rule faces_train_eae:
    input:
        data="results/data/faces.zarr",
        code=eae_sources("eae.experiments.faces.eae"),
    output:
        directory("results/faces/eae_T{temperature}/model"),
    log:
        "results/logs/faces/train_eae_T{temperature}.log",
    benchmark:
        "results/benchmarks/faces/train_eae_T{temperature}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        cfg=lambda wildcards: wf.faces_train_cfg(config, wildcards.temperature),
        checkpoint_dir="results/checkpoints/faces/eae_T{temperature}",
    script:
        "../scripts/faces_train_eae.py"


rule faces_ensemble:
    input:
        data="results/data/faces.zarr",
        model="results/faces/eae_T{temperature}/model",
        code=eae_sources("eae.experiments.faces.eae"),
    output:
        directory("results/faces/eae_T{temperature}/ensemble.zarr"),
    log:
        "results/logs/faces/ensemble_T{temperature}.log",
    benchmark:
        "results/benchmarks/faces/ensemble_T{temperature}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        cfg=lambda wildcards: wf.faces_ensemble_cfg(config, wildcards.temperature),
    script:
        "../scripts/faces_ensemble.py"


rule faces_report:
    input:
        data="results/data/faces.zarr",
        models=lambda wildcards: expand(
            "results/faces/eae_T{temperature}/model",
            temperature=wf.faces_tags(config),
        ),
        ensembles=lambda wildcards: expand(
            "results/faces/eae_T{temperature}/ensemble.zarr",
            temperature=wf.faces_tags(config),
        ),
        code=eae_sources("eae.experiments.faces.report"),
    output:
        figure=report(
            "results/figures/faces_fig3.png",
            category="Faces",
            caption="../report/faces_fig3.rst",
        ),
        table=report(
            "results/tables/faces.csv",
            category="Faces",
            caption="../report/faces_table.rst",
        ),
    log:
        "results/logs/faces/report.log",
    benchmark:
        "results/benchmarks/faces/report.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=6000,
    params:
        cfg=config["faces"]["report"],
        temperatures=[float(t) for t in config["faces"]["temperatures"]],
    script:
        "../scripts/faces_report.py"
