# Your own datasets (config["datasets"], schemas/datasets; eae.experiments.datasets): each
# entry's source (.npz/.npy, Zarr, NetCDF or an image folder) is checked and prepared into
# the store the image chain reads; every later stage is the image experiments' rule
# (images.smk) with {dataset} = the entry's name.
#
#   datasets_prepare   results/data/{dataset}.zarr
#
# A missing path, an unknown format, a reserved name or a source without the named
# arrays stops the run before any job (common.smk's config check); bad content (not
# numeric, not finite, too few samples for the split, labels of another length, images
# of mixed sizes without images.resize) fails this job, so nothing downstream runs.


rule datasets_prepare:
    input:
        source=lambda wildcards: wf.dataset_source_files(config, wildcards.dataset),
        code=eae_sources("eae.experiments.datasets.prepare"),
    output:
        directory("results/data/{dataset}.zarr"),
    log:
        "results/logs/data/prepare_{dataset}.log",
    benchmark:
        "results/benchmarks/data/prepare_{dataset}.tsv"
    wildcard_constraints:
        dataset=wf.wildcard_pattern(wf.user_datasets(config)),
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        cfg=lambda wildcards: wf.dataset_prepare_cfg(config, wildcards.dataset),
    script:
        "../scripts/datasets_prepare.py"
