"""Autoregressive models: exact densities by the chain rule, ancestral sampling.

Every model here is an ``nn.Module`` with a Pyro program
``model(x=None, num_samples=None)`` whose site "x" holds an
:class:`~pyro_dgm.distributions.AutoregressiveDistribution`, so
``pyro_dgm.fit(m.model, None, x)`` trains it by maximum likelihood and
``pyro_dgm.evaluate(m.model, x)`` gives the exact test NLL.

* :class:`FVSBN`: one logistic regression per dimension.
* :class:`NADE`: shared hidden weights, O(D H) by a running sum.
* :class:`MADE`: masked MLP, several orderings/connectivities, ensemble at test time.
* :class:`PixelCNN`: masked convolutions (blind spot included).
* :class:`GatedPixelCNN`: vertical and horizontal stacks (no blind spot).
* :class:`AutoregressiveRNN`: a GRU or LSTM over a raster ordering.

Outputs: ``output="bernoulli"`` (binary), ``"categorical"`` or
``"logistic_mixture"`` (grey levels 0..L-1, ``num_levels=L``) and
``"gaussian_mixture"`` (real values), with ``num_components=K``.

Example::

    >>> import torch, pyro_dgm
    >>> from pyro_dgm.models import NADE
    >>> x = torch.bernoulli(torch.full((100, 6), 0.5))
    >>> m = NADE(6, hidden=8)
    >>> r = pyro_dgm.fit(m.model, None, x, epochs=2, progress=False)
    >>> pyro_dgm.evaluate(m.model, x)["nll"] > 0
    True
"""

from ...registry import register_model
from .base import AutoregressiveModel
from .fvsbn import FVSBN
from .made import MADE
from .nade import NADE
from .pixelcnn import GatedPixelCNN, MaskedConv2d, PixelCNN
from .rnn import AutoregressiveRNN

__all__ = ["AutoregressiveModel", "FVSBN", "NADE", "MADE", "PixelCNN", "GatedPixelCNN", "AutoregressiveRNN",
           "MaskedConv2d"]


def _output_for(data_kind):
    """Bernoulli for binary data, a mixture of 5 Gaussians for real values."""
    if data_kind == "binary":
        return {"output": "bernoulli"}
    if data_kind in ("continuous", "points"):
        return {"output": "gaussian_mixture", "num_components": 5}
    raise ValueError(f"data_kind: expected 'binary', 'continuous' or 'points', got {data_kind!r}")


def _register(name, cls, description, defaults, fit_defaults, data_kinds=("binary", "continuous", "points")):
    def build(event_shape, data_kind, output=None, **options):
        # output=None: the data kind's (a named default, so run.json records None and a rebuild picks the same)
        chosen = _output_for(data_kind) if output is None else {"output": output}
        return cls(event_shape, **{**defaults, **chosen, **options})

    register_model(name, family="autoregressive", data_kinds=data_kinds, fit_defaults=fit_defaults,
                   description=description)(build)


_register("fvsbn", FVSBN, "fully visible sigmoid belief network", {}, {"lr": 1e-2, "epochs": 50})
_register("nade", NADE, "NADE (O(D H) running sum)", {"hidden": 100}, {"lr": 5e-3, "epochs": 50})
_register("made", MADE, "MADE, 8 random orderings, ensemble at test time",
          {"hidden": (500,), "num_masks": 8, "order": "random"}, {"lr": 3e-3, "epochs": 60})
_register("pixelcnn", PixelCNN, "PixelCNN with position biases", {"hidden": 32, "num_layers": 4},
          {"image": True, "lr": 3e-3, "epochs": 20}, data_kinds=("binary", "continuous"))
_register("gated-pixelcnn", GatedPixelCNN, "gated PixelCNN, vertical + horizontal stacks",
          {"hidden": 32, "num_layers": 5}, {"image": True, "lr": 3e-3, "epochs": 20},
          data_kinds=("binary", "continuous"))
_register("rnn", AutoregressiveRNN, "GRU over the raster ordering", {"hidden": 64}, {"lr": 1e-2, "epochs": 60})
