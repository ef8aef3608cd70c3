# Reaction–diffusion dataset (SPEC §3.1): train/val/test snapshots, flattened, in
# results/rd/dataset.zarr. Settings config["rd"]["data"] (schemas/rd_data.schema.yaml).


rule prepare_rd:
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
        "../scripts/prepare_rd.py"
