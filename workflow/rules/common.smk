# Config validation and the helpers every stage uses.
from pathlib import Path

from eae.config import ConfigError, validate_config

SCHEMA = Path(workflow.current_basedir).parent / "schemas" / "config.schema.yaml"

try:
    _validated = validate_config(config, SCHEMA)
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_validated)

LOGS = "results/logs"
BENCHMARKS = "results/benchmarks"


IMAGE_DATASETS = ("mnist", "frey")


def enabled_image_datasets():
    return [d for d in IMAGE_DATASETS if config[d]["enabled"]]


def all_targets():
    """Every table and figure the current config asks for."""
    targets = [
        "results/validation/sampler.csv",
        "results/figures/validation_sampler.png",
    ]
    for dataset in enabled_image_datasets():
        targets += expand(
            "results/{dataset}/{model}",
            dataset=dataset,
            model=["vae", "ae"],
        )
        targets.append(f"results/{dataset}/eae/ensemble.zarr")
    return targets
