# Reaction–diffusion simulation (SPEC §3.1): results/rd/simulation.zarr.
# Deterministic; settings config["rd"]["simulation"] (schemas/rd_simulation.schema.yaml).


rule simulate_rd:
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
        "../scripts/simulate_rd.py"
