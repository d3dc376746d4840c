"""polyculture: train a zoo of base models, measure emergence and homogenization, choose wisely.

The Python API mirrors the CLI::

    import polyculture
    results = polyculture.run_study("mnist1d", out="runs")   # polyculture run
    results.summary()                                         # polyculture show runs/mnist1d
    polyculture.load_run("runs/mnist1d").members
"""

__version__ = "0.1.0"

from polyculture.errors import ConfigError, DataError, PolycultureError, RegistryError
from polyculture.run import RunResults, Study, load_run, load_study, run_study

__all__ = [
    "ConfigError",
    "DataError",
    "PolycultureError",
    "RegistryError",
    "RunResults",
    "Study",
    "__version__",
    "load_run",
    "load_study",
    "run_study",
]
