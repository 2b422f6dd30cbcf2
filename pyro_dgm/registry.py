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

import functools
import inspect
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["ModelSpec", "register_model", "register_data", "MODELS", "DATA", "get_model", "get_data",
           "options_of"]


@dataclass
class ModelSpec:
    """How to build and train one registered model.

    Attributes:
        name: the CLI name.
        family: "autoregressive", "vae", "flow", "gan", "ebm", "score", "baseline".
        build: ``build(event_shape, data_kind, **options) -> module`` where the
            module has ``model`` and optionally ``guide``.
        objective: ``objective(module=, data_kind=, **options) -> Objective`` or None for fit's default.
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
    image_shape: tuple | None = None  # (C, H, W) of its images (flat examples are drawn as these); None: not images


MODELS: dict[str, ModelSpec] = {}
DATA: dict[str, DataSpec] = {}


_SKIPPED = ("event_shape", "data_kind", "module", "critic")  # given by the model, not by the user
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def options_of(fn) -> dict:
    """{name: default} of the keyword options a registry callable takes.

    Its named parameters; and when it forwards ``**options`` to a class it
    closes over as ``cls`` (the autoregressive builders, the EBM objectives),
    that class's, with the ``defaults`` it registers.
    """
    if fn is None:
        return {}
    fn = inspect.unwrap(fn)
    params = inspect.signature(fn).parameters
    named = {n: p.default for n, p in params.items() if n not in _SKIPPED and p.kind in _NAMED}
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) or inspect.isclass(fn):
        return named
    scope = inspect.getclosurevars(fn).nonlocals
    inner = options_of(scope["cls"]) if inspect.isclass(scope.get("cls")) else {}
    return {**inner, **scope.get("defaults", {}), **named}


def _refuse_unknown_options(what, fn, options):
    """A ValueError naming the options ``fn`` does not take, and those it does (many registry callables end in
    ``**options``, which would drop a misspelt one without a word)."""
    accepted = options_of(fn)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{what}: no option(s) {unknown}; its options are {', '.join(sorted(accepted)) or 'none'}")


def _refusing_unknown_options(name, build):
    """``build`` that refuses an option it does not take, before anything is built."""
    @functools.wraps(build)
    def checked(event_shape, data_kind, **options):
        _refuse_unknown_options(f"model {name!r}", build, options)
        return build(event_shape, data_kind, **options)
    return checked


def _objective_refusing_unknown_options(name, objective):
    """``objective(module=, data_kind=, **options)`` that refuses an option it does not take."""
    if objective is None:
        return None

    @functools.wraps(objective)
    def checked(module=None, data_kind=None, **options):
        _refuse_unknown_options(f"model {name!r}'s objective", objective, options)
        return objective(module=module, data_kind=data_kind, **options)
    return checked


def register_model(name, *, family, data_kinds=("binary",), objective=None, fit_defaults=None,
                   description="", conditional=False, options_added=None):
    """Decorator: register ``build`` under ``name`` (its ``ModelSpec.build`` and ``objective`` refuse unknown
    options)."""
    def deco(build):
        MODELS[name] = ModelSpec(name, family, _refusing_unknown_options(name, build),
                                 _objective_refusing_unknown_options(name, objective), tuple(data_kinds),
                                 dict(fit_defaults or {}), description or (build.__doc__ or "").strip(),
                                 bool(conditional), dict(options_added or {}))
        return build
    return deco


def register_data(name, *, kind, description="", image_shape=None):
    def deco(load):
        DATA[name] = DataSpec(name, kind, load, description, None if image_shape is None else tuple(image_shape))
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
