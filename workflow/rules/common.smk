# Config validation and the input/params functions every stage uses. Paths, targets and
# per-rule config slices live in eae.workflow (the only library module the rules import,
# with eae.support.config); the functions here bind them to this run's config.
from pathlib import Path

from eae import workflow as wf
from eae.support.config import ConfigError, check_config

SCHEMA = Path(workflow.current_basedir).parent / "schemas" / "config.schema.yaml"

# The same check as `eae check-config` (schema, finite numbers, cross-field rules, the
# data files of the experiments that will run, relative to the working directory), so
# that a config any stage would refuse stops here, before any job, with every problem.
try:
    _validated = check_config(config, SCHEMA)
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_validated)

LOGS = wf.LOGS
BENCHMARKS = wf.BENCHMARKS
eae_sources = wf.eae_sources


def all_targets():
    """Every result the current config asks for, with the report's extras."""
    return wf.all_targets(config)


def result_targets(wildcards=None):
    """Every table, figure and store the current config asks for."""
    return wf.result_targets(config)


def enabled_image_datasets():
    return wf.enabled_image_datasets(config)


def analysis_input_files(wildcards):
    """Data store, trained models and EAE ensemble of the models config["analysis"] names."""
    return wf.analysis_inputs(wildcards.dataset, config["analysis"]["models"])
