# Dataset preparation (SPEC §3.2, §4): results/data/{mnist,frey}.zarr.
# Raw downloads are their own rules with outputs under resources/, so a download is
# done once, runs on the head node (localrule: compute nodes often have no network),
# and is skipped when the checksummed file is already there. The file names must
# match eae.data.MNIST_FILENAME / FREY_FILENAME, which eae.data uses as the cache.


rule download_mnist:
    output:
        "resources/mnist.npz",
    log:
        "results/logs/data/download_mnist.log",
    retries: 2
    localrule: True
    conda:
        "../../environment.yml"
    params:
        url=config["mnist"]["data"]["url"],
        sha256=config["mnist"]["data"]["sha256"],
    script:
        "../scripts/download.py"


rule download_frey:
    output:
        "resources/frey_rawface.mat",
    log:
        "results/logs/data/download_frey.log",
    retries: 2
    localrule: True
    conda:
        "../../environment.yml"
    params:
        url=config["frey"]["data"]["url"],
        sha256=config["frey"]["data"]["sha256"],
    script:
        "../scripts/download.py"


rule prepare_mnist:
    input:
        unpack(mnist_raw_input),
        code=eae_sources("eae.experiments.images.data"),
    output:
        directory("results/data/mnist.zarr"),
    log:
        "results/logs/data/prepare_mnist.log",
    benchmark:
        "results/benchmarks/data/prepare_mnist.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        cfg=config["mnist"]["data"],
        resources="resources",
    script:
        "../scripts/prepare_mnist.py"


rule prepare_frey:
    input:
        unpack(frey_raw_input),
        code=eae_sources("eae.experiments.images.data"),
    output:
        directory("results/data/frey.zarr"),
    log:
        "results/logs/data/prepare_frey.log",
    benchmark:
        "results/benchmarks/data/prepare_frey.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        cfg=config["frey"]["data"],
        resources="resources",
    script:
        "../scripts/prepare_frey.py"
