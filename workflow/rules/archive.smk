# One tarball of the results (eae.archive): every file below results/ (checkpoints and
# results/archive/ excluded) with a sha256 manifest, the provenance records (sidecars in
# results/provenance/, Zarr attrs), the resolved config and a pip freeze of the
# environment. Check it with `eae archive verify results/archive/eae-results.tar.gz`.
# Not part of the default target: run `snakemake archive`.


rule archive:
    input:
        targets=all_targets(),
        code=eae_sources("eae.archive"),
    output:
        "results/archive/eae-results.tar.gz",
    log:
        f"{LOGS}/archive.log",
    benchmark:
        f"{BENCHMARKS}/archive.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        cfg=config,
        # the archive must not hold its own (growing) log nor a stale benchmark of itself
        exclude=[f"{LOGS}/archive.log", f"{BENCHMARKS}/archive.tsv"],
    script:
        "../scripts/archive.py"
