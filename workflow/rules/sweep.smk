# Temperature sweep (issue 7 §3, §4; eae.experiments.sweep): for config["sweep"]["experiment"],
# one job per point — each constant temperature (tag T1e-08) and each annealed run
# (tag anneal_1e-05_1e-09_geometric) — under results/sweep/{experiment}/{point}/:
# model/, ensemble.zarr, row.csv, convergence.csv. Then one table job:
# results/sweep/{experiment}/sweep.csv and recommended.json,
# results/tables/sweep_{experiment}.md, results/figures/sweep_{experiment}.png.
# Settings: config["sweep"] (schemas/sweep.schema.yaml).
#
# A point's params hold only what it depends on (eae.workflow.sweep_point_cfg: its own eae
# config, the analysis keys its metrics use, the diagnostics settings), so adding a
# temperature runs only the new point and the table. Checkpoints live outside the
# directory() outputs, in results/checkpoints/sweep/, so a killed job resumes.


rule sweep_point:
    input:
        unpack(lambda wildcards: wf.sweep_inputs(wildcards.experiment, config)),
        code=eae_sources("eae.experiments.sweep.points"),
    output:
        model=directory("results/sweep/{experiment}/{point}/model"),
        ensemble=directory("results/sweep/{experiment}/{point}/ensemble.zarr"),
        row="results/sweep/{experiment}/{point}/row.csv",
        convergence="results/sweep/{experiment}/{point}/convergence.csv",
    log:
        "results/logs/sweep/{experiment}/{point}.log",
    benchmark:
        "results/benchmarks/sweep/{experiment}/{point}.tsv"
    wildcard_constraints:
        experiment=wf.wildcard_pattern(wf.sweep_experiments(config)),
        point="T[^/]+|anneal_[^/]+",
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=1,
    params:
        cfg=lambda wildcards: wf.sweep_point_cfg(
            config, wildcards.experiment, wildcards.point
        ),
        checkpoint_dir="results/checkpoints/sweep/{experiment}/{point}",
    script:
        "../scripts/sweep_point.py"


rule sweep_table:
    input:
        rows=lambda wildcards: wf.sweep_rows(config, wildcards.experiment),
        code=eae_sources("eae.experiments.sweep.table"),
    output:
        csv=report(
            "results/sweep/{experiment}/sweep.csv",
            category="Temperature sweep",
            caption="../report/sweep_table.rst",
        ),
        md="results/tables/sweep_{experiment}.md",
        figure=report(
            "results/figures/sweep_{experiment}.png",
            category="Temperature sweep",
            caption="../report/sweep_figure.rst",
        ),
        json="results/sweep/{experiment}/recommended.json",
    log:
        "results/logs/sweep/{experiment}/table.log",
    benchmark:
        "results/benchmarks/sweep/{experiment}/table.tsv"
    wildcard_constraints:
        experiment=wf.wildcard_pattern(wf.sweep_experiments(config)),
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        cfg=wf.sweep_table_cfg(config),
    script:
        "../scripts/sweep_table.py"
