# The sampler self-check (eae.experiments.sampler_check; config["validation"]): the
# Simmering thermostat on known distributions -> results/validation/sampler.csv and
# results/figures/validation_sampler.png.


rule sampler_check:
    input:
        code=eae_sources("eae.experiments.sampler_check"),
    output:
        csv=report(
            "results/validation/sampler.csv",
            category="Sampler validation",
            caption="../report/validation.rst",
        ),
        figure=report(
            "results/figures/validation_sampler.png",
            category="Sampler validation",
            caption="../report/validation_figure.rst",
        ),
    log:
        f"{LOGS}/validation.log",
    benchmark:
        f"{BENCHMARKS}/validation.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=2000,
    params:
        cfg=wf.sampler_check_cfg(config),
    script:
        "../scripts/sampler_check.py"
