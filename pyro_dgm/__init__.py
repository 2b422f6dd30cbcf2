"""pyro_dgm: deep generative models as Pyro programs, trained by one ``fit``.

>>> import pyro_dgm
>>> sorted(n for n in ("fit", "evaluate", "to_arviz") if hasattr(pyro_dgm, n))
['evaluate', 'fit', 'to_arviz']
"""

from . import data, distributions, inference, metrics, models, partition, samplers
from .fit import FitResult, FitState, NonFiniteLossError, fit
from .safety import FitInterrupted
from .evaluation import evaluate
from .arviz import compare, to_arviz

__version__ = "0.1.0"

__all__ = ["fit", "evaluate", "to_arviz", "compare", "FitResult", "FitState", "NonFiniteLossError",
           "FitInterrupted", "data", "distributions", "inference", "metrics", "models", "partition", "samplers",
           "__version__"]
