# Analysis of the SINDy-EAE coefficient ensemble (SPEC §3.1): Table 4, Figs 4, 1d, 1e–f,
# the identified oscillation frequency and the identifiability report (eae.identifiability,
# re-solved on the stored codes). Settings config["rd"]["analysis"]
# (schemas/rd_analysis.schema.yaml).


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
