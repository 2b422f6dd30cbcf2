"""pyro_dgm: deep generative models as Pyro programs, trained by one ``fit``.

>>> import pyro_dgm
>>> sorted(n for n in ("fit", "evaluate", "to_arviz") if hasattr(pyro_dgm, n))
['evaluate', 'fit', 'to_arviz']
"""

from . import data, distributions, inference, metrics, models, partition, samplers
from .fit import FitResult, FitState, NonFiniteLossError, fit
from .safety import FitInterrupted
from .evaluation import evaluate
from .inpaint import inpaint

__version__ = "0.1.0"

# ArviZ (with pandas, scipy, xarray and matplotlib) costs more than a second to import, and
# plots pulls in matplotlib and seaborn: they load on first use (PEP 562), not with the package.
_LAZY_NAMES = {"to_arviz": "arviz", "compare": "arviz"}
_LAZY_MODULES = ("arviz", "callbacks", "plots", "cli", "demo")


def __getattr__(name):
    import importlib

    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_NAMES) | set(_LAZY_MODULES))

__all__ = ["fit", "evaluate", "inpaint", "to_arviz", "compare", "FitResult", "FitState", "NonFiniteLossError",
           "FitInterrupted", "data", "distributions", "inference", "metrics", "models", "partition", "samplers",
           "__version__"]
