# The reaction–diffusion experiment (SPEC §3.1; eae.experiments.rd):
#
#   rd_simulate      results/rd/simulation.zarr       (deterministic lambda-omega system)
#   rd_prepare       results/rd/dataset.zarr          (train/val/test snapshots, flattened)
#   rd_train_eae     results/rd/eae/model/            (SINDy-EAE, Algorithm 1)
#   rd_coefficients  results/rd/eae/coefficients.zarr (coefficient ensemble, decoder fixed)
#   rd_analysis      Table 4, Figs 4, 1d, 1e–f, the identified frequency and the
#                    identifiability report (re-solved on the stored codes)
#
# Settings: config["rd"] (schemas/rd_simulation, rd_data, rd_eae, rd_analysis).
# The running checkpoint lives OUTSIDE the training rule's directory() output, in
# results/checkpoints/rd/eae/: Snakemake deletes the outputs of a failed or incomplete
# job, and the checkpoint must survive that so a killed job resumes. A checkpoint made
# with another training config or data set is ignored. The final state (thermostat
# included) is saved as results/rd/eae/model/final_state.npz, from which rd_coefficients
# continues the chain. Training params exclude the ensemble settings: a new ensemble
# size reruns rd_coefficients only.


rule rd_simulate:
    input:
        code=eae_sources("eae.experiments.rd.simulate"),
    output:
        directory("results/rd/simulation.zarr"),
    log:
        "results/logs/rd/simulate.log",
    benchmark:
        "results/benchmarks/rd/simulate.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        cfg=config["rd"]["simulation"],
    script:
        "../scripts/rd_simulate.py"


rule rd_prepare:
    input:
        sim="results/rd/simulation.zarr",
        code=eae_sources("eae.experiments.rd.data"),
    output:
        directory("results/rd/dataset.zarr"),
    log:
        "results/logs/rd/prepare.log",
    benchmark:
        "results/benchmarks/rd/prepare.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        cfg=config["rd"]["data"],
    script:
        "../scripts/rd_prepare.py"


rule rd_train_eae:
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
        cfg=wf.rd_train_cfg(config),
        checkpoint_dir="results/checkpoints/rd/eae",
    script:
        "../scripts/rd_train_eae.py"


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


rule rd_analysis:
    input:
        coefficients="results/rd/eae/coefficients.zarr",
        data="results/rd/dataset.zarr",
        code=eae_sources("eae.experiments.rd.analysis"),
    output:
        table_csv=report(
            "results/tables/table4.csv",
            category="Reaction–diffusion (SINDy-EAE)",
            caption="../report/table4.rst",
        ),
        table_md="results/tables/table4.md",
        fig_correlation=report(
            "results/figures/rd_fig4_correlation.png",
            category="Reaction–diffusion (SINDy-EAE)",
            caption="../report/rd_fig4.rst",
        ),
        fig_kde=report(
            "results/figures/rd_fig1d_kde.png",
            category="Reaction–diffusion (SINDy-EAE)",
            caption="../report/rd_fig1d.rst",
        ),
        fig_dynamics=report(
            "results/figures/rd_fig1ef_dynamics.png",
            category="Reaction–diffusion (SINDy-EAE)",
            caption="../report/rd_fig1ef.rst",
        ),
        frequency=report(
            "results/rd/frequency.csv",
            category="Reaction–diffusion (SINDy-EAE)",
            caption="../report/rd_frequency.rst",
        ),
        identifiability="results/tables/table4_identifiability.md",
        sensitivity="results/rd/sindy_sensitivity.csv",
        vs_paper="results/tables/table4_vs_paper.md",
    log:
        "results/logs/rd/analysis.log",
    benchmark:
        "results/benchmarks/rd/analysis.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        cfg=config["rd"]["analysis"],
    script:
        "../scripts/rd_analysis.py"
