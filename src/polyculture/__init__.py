"""polyculture: train a zoo of base models, measure emergence and homogenization, choose wisely.

The Python API mirrors the CLI::

    import polyculture
    results = polyculture.run_study("mnist1d", out="runs")   # polyculture run
    results.summary()                                         # polyculture show runs/mnist1d
    polyculture.load_run("runs/mnist1d").members

Extension points (the same decorators the built-ins use; see docs/extending.md)::

    @polyculture.dataset("my_data", description=..., modality="tabular")
    @polyculture.family("my_net", kind="torch", modalities=("tabular",), knobs=..., description=...)
    @polyculture.metric("my_metric", description=...)
"""

__version__ = "0.1.0"

from polyculture.data.builders import RawData, dataset
from polyculture.errors import (
    ConfigError,
    ConformanceError,
    DataError,
    PluginError,
    PolycultureError,
    RegistryError,
)
from polyculture.measure.performance import metric
from polyculture.plugins import load_plugins
from polyculture.run import RunResults, Study, load_run, load_study, run_study, run_suite
from polyculture.zoo.base import ClassicalModel, Knobs, ZooModel, family

__all__ = [
    "ClassicalModel",
    "ConfigError",
    "ConformanceError",
    "DataError",
    "Knobs",
    "PluginError",
    "PolycultureError",
    "RawData",
    "RegistryError",
    "RunResults",
    "Study",
    "ZooModel",
    "__version__",
    "dataset",
    "family",
    "load_plugins",
    "load_run",
    "load_study",
    "metric",
    "run_study",
    "run_suite",
]
