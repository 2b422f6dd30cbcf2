"""Name -> builder tables for models and data sets, read by the CLI and benchmarks.

Each model family registers its models here when its module is imported, so
the CLI never lists models by hand::

    @register_model("vae", family="vae", data_kinds=("binary", "continuous"))
    def _build_vae(event_shape, data_kind, **options):
        return VAE(int(np.prod(event_shape)), likelihood=...)

A builder returns an object with ``model`` (and ``guide`` if it has one)
attributes or a :class:`ModelSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["ModelSpec", "register_model", "register_data", "MODELS", "DATA", "get_model", "get_data"]


@dataclass
class ModelSpec:
    """How to build and train one registered model.

    Attributes:
        name: the CLI name.
        family: "autoregressive", "vae", "flow", "gan", "ebm", "score", "baseline".
        build: ``build(event_shape, data_kind, **options) -> module`` where the
            module has ``model`` and optionally ``guide``.
        objective: ``objective(**options) -> Objective`` or None for fit's default.
        data_kinds: which data kinds it accepts: "binary", "continuous", "points".
        fit_defaults: keyword arguments for ``fit`` (lr, batch_size, epochs).
        description: one line for ``pyro-dgm train --help``.
        conditional: the program is ``model(x, y)``: it trains on batches ``(x, labels)``.
        options_added: builder options added after runs were recorded, with the value those runs were
            built with: a ``run.json`` whose options lack one loads with it, not with today's default.
    """

    name: str
    family: str
    build: Callable
    objective: Callable | None = None
    data_kinds: tuple = ("binary",)
    fit_defaults: dict = field(default_factory=dict)
    description: str = ""
    conditional: bool = False
    options_added: dict = field(default_factory=dict)


@dataclass
class DataSpec:
    name: str
    kind: str  # "binary", "continuous" or "points"
    load: Callable  # load(split, seed, data_dir=None) -> Tensor
    description: str = ""


MODELS: dict[str, ModelSpec] = {}
DATA: dict[str, DataSpec] = {}


def register_model(name, *, family, data_kinds=("binary",), objective=None, fit_defaults=None,
                   description="", conditional=False, options_added=None):
    """Decorator: register ``build`` under ``name``."""
    def deco(build):
        MODELS[name] = ModelSpec(name, family, build, objective, tuple(data_kinds),
                                 dict(fit_defaults or {}), description or (build.__doc__ or "").strip(),
                                 bool(conditional), dict(options_added or {}))
        return build
    return deco


def register_data(name, *, kind, description=""):
    def deco(load):
        DATA[name] = DataSpec(name, kind, load, description)
        return load
    return deco


def _load_all():
    # Importing the model package registers every family.
    from . import data, models  # noqa: F401


def get_model(name: str) -> ModelSpec:
    _load_all()
    if name not in MODELS:
        raise ValueError(f"model: unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name]


def get_data(name: str) -> DataSpec:
    _load_all()
    if name not in DATA:
        raise ValueError(f"data: unknown data set {name!r}; expected one of {sorted(DATA)}")
    return DATA[name]
