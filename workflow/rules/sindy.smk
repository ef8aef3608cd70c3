# SINDy-EAE on the reaction–diffusion data (SPEC §3.1): training and the coefficient
# ensemble. Settings config["rd"]["eae"] (schemas/rd_eae.schema.yaml).
#
# The running checkpoint lives OUTSIDE the rule's directory() output, in
# results/checkpoints/rd/eae/: Snakemake deletes the outputs of a failed or incomplete
# job, and the checkpoint must survive that so a killed job resumes. A checkpoint made
# with another training config or data set is ignored. The final state (thermostat
# included) is saved as results/rd/eae/model/final_state.npz, from which rd_coefficients
# continues the chain. Training params exclude the ensemble settings: a new ensemble
# size reruns rd_coefficients only.


rule train_rd_eae:
    input:
        data="results/rd/dataset.zarr",
        code=eae_sources("eae.experiments.rd.eae"),
    output:
        directory("results/rd/eae/model"),
    log:
        "results/logs/rd/train_eae.log",
    benchmark:
        "results/benchmarks/rd/train_eae.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=6000,
        gpu=1,
    params:
        cfg=lambda wildcards: {
            k: v for k, v in config["rd"]["eae"].items() if k != "ensemble"
        },
        checkpoint_dir="results/checkpoints/rd/eae",
    script:
        "../scripts/train_rd_eae.py"


rule rd_coefficients:
    input:
        data="results/rd/dataset.zarr",
        model="results/rd/eae/model",
        code=eae_sources("eae.experiments.rd.eae"),
    output:
        directory("results/rd/eae/coefficients.zarr"),
    log:
        "results/logs/rd/coefficients.log",
    benchmark:
        "results/benchmarks/rd/coefficients.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=6000,
    params:
        cfg=config["rd"]["eae"],
    script:
        "../scripts/rd_coefficients.py"
