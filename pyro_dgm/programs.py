"""How pyro_dgm runs a Pyro program: calls, the data site, sampling, parameters, minibatch scaling.

Every entry point (``fit``, ``evaluate``, ``to_arviz``, ``compare``, the
objectives and samplers) goes through these helpers, so a program written as
Pyro's tutorials write one works unchanged:

* it is called ``program(x, *args)``: ``x`` the data (or ``None``), ``args``
  the further items of a batch ``(x, y, ...)``;
* its data site is ``"x"`` by default, any observed site by choice, or the
  one observed site whose value is the batch (:func:`resolve_site`);
* it is sampled with ``num_samples=n`` only if it accepts that keyword;
  otherwise it runs on a template batch with the data site unconditioned
  (:func:`sample_program`), as ``poutine.uncondition`` does;
* its parameters are found as ``SVI`` finds them, from the param sites of a
  trace (``pyro.param``, ``pyro.module``, ``PyroParam``, autoguides), beside
  the parameters of the modules that own the programs (:func:`program_modules`);
* with minibatches of B from N examples, the sites inside the data plate
  count N/B times (:class:`DataPlateScale`), as ``pyro.plate(size=N,
  subsample_size=B)`` would scale them, so global latents get the full-data
  posterior.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import itertools

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoContinuous
from pyro.poutine.messenger import Messenger
from pyro.poutine.uncondition_messenger import UnconditionMessenger
from pyro.poutine.util import site_is_subsample
from torch import nn

__all__ = ["call", "trace_program", "log_density", "sample_sites", "latent_sites", "observed_sites", "data_site",
           "resolve_site", "accepts_num_samples", "sample_program", "predictive_trace", "uncondition_site",
           "module_of", "modules_of", "named_modules", "program_modules", "PyroParams", "announce",
           "fit_owns_parameters",
           "DataPlateScale", "data_plate", "global_latents", "minibatch_plate", "subsampled_plate", "observed_item",
           "split_batch", "device_of"]


# -- calling a program ---------------------------------------------------------
def split_batch(batch):
    """``(x, args)`` of a batch: a tensor is ``(x, ())``, a tuple or list ``(x, y, ...)`` is ``(x, (y, ...))``."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("data: a batch is an empty tuple; expected (x, ...) with x a tensor")
        return batch[0], tuple(batch[1:])
    return batch, ()


def call(program, x, args=(), **kwargs):
    """``program(x, *args, **kwargs)``: the one way pyro_dgm calls a program."""
    return program(x, *args, **kwargs)


def trace_program(program, *args, **kwargs) -> poutine.Trace:
    """Run ``program(*args, **kwargs)`` under ``poutine.trace`` and return its trace."""
    return poutine.trace(program).get_trace(*args, **kwargs)


def sample_sites(trace: poutine.Trace) -> list[str]:
    """Names of the sample sites of a trace (plates' subsample sites left out)."""
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]


def latent_sites(trace: poutine.Trace) -> list[str]:
    """Names of the unobserved sample sites of a trace."""
    return [n for n in sample_sites(trace) if not trace.nodes[n]["is_observed"]]


def observed_sites(trace: poutine.Trace) -> list[str]:
    """Names of the observed sample sites of a trace."""
    return [n for n in sample_sites(trace) if trace.nodes[n]["is_observed"]]


def data_site(trace: poutine.Trace, name: str = "x") -> dict:
    """The site ``name`` of a trace, with a clear error when the program has none."""
    if name not in trace.nodes or trace.nodes[name]["type"] != "sample":
        raise ValueError(
            f"site: the program has no sample site {name!r} for the data; its sample sites are "
            f"{sample_sites(trace)}. Pass site= with the name of the site that observes the data."
        )
    return trace.nodes[name]


def _same_data(value, x) -> bool:
    if not isinstance(value, torch.Tensor) or value.numel() != x.numel():
        return False
    if value is x or (value.data_ptr() == x.data_ptr() and value.numel() > 0):
        return True
    return bool(torch.equal(value.reshape(-1).to(x.dtype), x.reshape(-1)))


def _refuse_subsampling_the_batch(trace, observed, x):
    # pyro.plate("data", len(data), subsample_size=B) with obs=data[ind] (Pyro's SVI tutorial, part II): the
    # program draws its own minibatch of the batch it is given, which fit and evaluate already batch.
    for name in observed:
        for f in trace.nodes[name]["cond_indep_stack"]:
            if f.vectorized and f.full_size == x.shape[0] and f.size < f.full_size:
                raise ValueError(
                    f"model: site {name!r} is in pyro.plate({f.name!r}, {f.full_size}, subsample_size={f.size}), "
                    f"which draws its own {f.size} of the {f.full_size} examples it is given; here the data "
                    f"are batched for it: write pyro.plate({f.name!r}, len(x)) with obs=x and pass "
                    f"batch_size={f.size} (global latents then count the batch N/B times, as Pyro's subsampling)")


def observed_item(site: dict, x, args=()) -> int:
    """Which batch item the data site observes: 0 for ``x``, ``1 + j`` for ``args[j]`` (``obs=y``); 0 if none."""
    if _same_data(site["value"], x):
        return 0
    return next((1 + j for j, a in enumerate(args) if isinstance(a, torch.Tensor) and _same_data(site["value"], a)), 0)


def resolve_site(trace: poutine.Trace, x: torch.Tensor, site: str | None = None, args=()) -> str:
    """The name of the data site of a program traced on ``x`` (and the further batch items ``args``).

    ``site`` if given (it must be observed); else ``"x"`` if the program
    observes such a site; else the one observed site whose value is the batch
    (``obs=x`` or ``obs=x.reshape(...)``), or failing that the one that
    observes a further item (``model(x, y)`` with ``obs=y``, as a regression
    writes it). Several or none: a ValueError that names the candidates.
    """
    observed = observed_sites(trace)
    _refuse_subsampling_the_batch(trace, observed, x)
    if site is not None:
        data_site(trace, site)
        if site not in observed:
            raise ValueError(f"site: {site!r} is not observed when the program is called with the data; "
                             f"its observed sites are {observed}")
        return site
    if "x" in observed:
        return "x"
    matches = [n for n in observed if _same_data(trace.nodes[n]["value"], x)]
    if not matches:
        matches = [n for n in observed if any(isinstance(a, torch.Tensor) and _same_data(trace.nodes[n]["value"], a)
                                               for a in args)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ValueError(f"site: no sample site of the program observes the data (observed sites: {observed}); "
                         "write pyro.sample(name, ..., obs=x) and pass site=name if it is not 'x'")
    raise ValueError(f"site: several sites observe the data ({matches}); pass site= to say which is the data site")


def log_density(model, site: str = "x", args=()):
    """``x -> log p(x)`` per example for a program without latents: a target for the MCMC samplers.

    ``model(x, *args)`` is traced at the states ``x`` (shape ``(chains,
    *event_shape)``) and the log densities of its observed sites are summed
    per chain, so ``pyro_dgm.inference.langevin(x0, log_prob=log_density(model))``
    (or ``mala``, ``hmc``, ``nuts``) samples a plain Pyro program. An
    unnormalized density (an EBM) is fine: the samplers need log p only up
    to a constant.

    Example::

        >>> import pyro, pyro.distributions as dist, torch
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(0.0, 1.0).expand([len(x), 2]).to_event(1), obs=x)
        >>> log_density(model)(torch.zeros(3, 2)).shape
        torch.Size([3])
    """
    def log_prob(x):
        trace = trace_program(model, x, *args)
        data_site(trace, site)
        if latent_sites(trace):
            raise ValueError(f"model: log_density needs a program without latent sites; it samples "
                             f"{latent_sites(trace)}")
        return per_example_log_prob(trace, x.shape[0], observed_sites(trace))

    return log_prob


def per_example_log_prob(trace, batch_size: int, sites=None) -> torch.Tensor:
    """Sum of the log densities of ``sites`` (all sample sites by default), shape (batch,).

    The one per-example reduction: each site's log density summed over all but the batch dimension.
    """
    total = torch.zeros(batch_size)
    for name in sample_sites(trace) if sites is None else sites:
        site = trace.nodes[name]
        lp = site["fn"].log_prob(site["value"])
        if lp.dim() == 0 or lp.numel() % batch_size:
            raise ValueError(f"site {name!r} has log densities of shape {tuple(lp.shape)}, not one or more per "
                             f"example of the {batch_size}; put it inside pyro.plate('data', N)")
        total = total.to(lp.device) + lp.reshape(batch_size, -1).sum(-1)
    return total


# -- sampling ------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _takes_num_samples(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    # Only a named parameter: an autoguide's **kwargs would pass the keyword on to the model.
    return "num_samples" in params


def accepts_num_samples(program) -> bool:
    """Whether ``program`` takes a ``num_samples=`` keyword (pyro_dgm's own models do)."""
    fn = program.forward if isinstance(program, nn.Module) else program
    fn = getattr(fn, "__func__", fn)
    try:
        return _takes_num_samples(fn)
    except TypeError:  # unhashable callable
        return "num_samples" in getattr(inspect.signature(fn), "parameters", {})


class uncondition_site(UnconditionMessenger):
    """``poutine.uncondition`` for one site: only ``name`` is sampled instead of observed.

    Pyro's handler unconditions every observed site; a program that observes
    labels or other batch items beside the data keeps those observed here.
    """

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def _pyro_sample(self, msg):
        if msg["name"] == self.name:
            super()._pyro_sample(msg)


def _template(like: torch.Tensor, n: int) -> torch.Tensor:
    if like.shape[0] == n:
        return like
    return like[torch.arange(n, device=like.device) % like.shape[0]]


def _template_args(args, n):
    return tuple(_template(a, n) if isinstance(a, torch.Tensor) and a.dim() > 0 else a for a in args)


def sample_program(model, num_samples: int, site: str = "x", *, like: torch.Tensor | None = None,
                   args=(), trace: bool = False, grad: bool = False):
    """``num_samples`` draws of the data site, by running the program forward.

    A program that accepts ``num_samples=`` is called ``model(None, *args,
    num_samples=n)``. Any other program (``model(x)``, ``model(x=None)``) is
    run on ``like`` (a batch of data, its rows repeated to n) with the data site
    unconditioned, so its plates get their sizes from the data as in training;
    without ``like`` it is called ``model(None, *args)``. Returns the values,
    or the whole trace with ``trace=True``; without gradients unless
    ``grad=True`` (a GAN's generator step needs them).
    """
    with contextlib.nullcontext() if grad else torch.no_grad():
        tr = _sample_trace(model, num_samples, site, like, args)
    return tr if trace else data_site(tr, site)["value"]


def _sample_trace(model, num_samples, site, like, args):
    if accepts_num_samples(model):
        return trace_program(model, None, *args, num_samples=num_samples)
    if like is not None:
        return trace_program(uncondition_site(site)(model), _template(like, num_samples),
                             *_template_args(args, num_samples))
    return trace_program(model, None, *args)


def site_log_prob(model, x: torch.Tensor, site: str = "x", args=()) -> torch.Tensor:
    """``log p(x)`` of each example under the distribution the program puts at the data site.

    The conveniences ``FlowModel.log_prob`` and friends go through this (and
    :func:`sample_program`), so a handler around the call applies to them too.
    """
    node = data_site(trace_program(model, x, *args), site)
    return node["fn"].log_prob(node["value"])


def predictive_trace(model, guide_trace, x, args=(), site: str = "x") -> poutine.Trace:
    """The model replayed on a guide trace with the data site unconditioned: the posterior predictive."""
    return trace_program(uncondition_site(site)(poutine.replay(model, trace=guide_trace)), x, *args)


# -- parameters ----------------------------------------------------------------
def module_of(program):
    """The ``nn.Module`` a program is (called through ``forward``) or is a bound method of; else None."""
    if isinstance(program, nn.Module):
        return program
    owner = getattr(program, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def modules_of(*programs, named: bool = True) -> list[nn.Module]:
    """The ``nn.Module``\\ s that own the given programs, without repeats; with ``named``, also the networks
    a plain-function program names (:func:`named_modules`), so that their mode, device and dtype follow."""
    found, seen = [], set()
    for program in programs:
        module = module_of(program) if program is not None else None
        candidates = [module] if module is not None else (named_modules(program) if named else [])
        for m in candidates:
            if id(m) not in seen:
                seen.add(id(m))
                found.append(m)
    return found


def named_modules(program) -> list[nn.Module]:
    """The ``nn.Module``\\ s a plain-function program names as globals or closure variables: its networks,
    as a script writes ``pyro.module("flow", flow)`` with ``flow`` built beside the function.

    Python keeps no link from ``pyro.module``'s call to the module (Pyro records only its parameters), so
    the function's own names are read; a network reached only through another function is not found (its
    parameters are still trained, as :class:`PyroParams`).
    """
    fn = inspect.unwrap(program) if callable(program) else None
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    values = [fn.__globals__.get(name) for name in code.co_names]
    for cell in fn.__closure__ or ():
        with contextlib.suppress(ValueError):  # a closure variable not yet assigned
            values.append(cell.cell_contents)
    return [v for v in values if isinstance(v, nn.Module)]


def device_of(obj) -> torch.device:
    """The device of the module behind ``obj`` (a module or a bound method of one); CPU otherwise."""
    module = module_of(obj)
    if module is not None:
        for t in itertools.chain(module.parameters(), module.buffers()):
            return t.device
    return torch.device("cpu")


_FIT_OWNS = contextvars.ContextVar("pyro_dgm_fit_owns_parameters", default=False)
_names = itertools.count()


class fit_owns_parameters:
    """Inside: pyro_dgm's own models skip :func:`announce` (``fit`` already holds their parameters)."""

    def __enter__(self):
        self._token = _FIT_OWNS.set(True)

    def __exit__(self, *exc):
        _FIT_OWNS.reset(self._token)


def announce(module: nn.Module) -> None:
    """Register a library model's parameters with Pyro, as ``pyro.module`` does, so ``SVI`` trains it.

    pyro_dgm's models keep plain ``nn.Module`` submodules: a ``pyro.param``
    per tensor per step would cost fit about 5% on a small VAE. Under
    ``fit`` they are not announced (fit holds them already); anywhere else
    (``SVI``, ``Predictive``, a user's own loop) each program call registers
    them under a name unique to the instance, so two models never share
    parameters in the global param store. A program that registers the model
    itself (``pyro.module("vae", vae)``, as Pyro's tutorials do) keeps its own
    name: registering the same tensors twice would break ``JitTrace_ELBO``.
    """
    if _FIT_OWNS.get():
        return
    name = module.__dict__.get("_pyro_dgm_name")
    if name is None:
        name = module.__dict__["_pyro_dgm_name"] = f"{type(module).__name__}_{next(_names)}"
    first = next(module.parameters(), None)
    if first is None:
        return
    known = pyro.get_param_store().param_name(first)
    if known is not None and not known.startswith(name + "$$$"):
        return
    pyro.module(name, module)


def _key(name: str) -> str:
    # nn.Module names may not contain "."; pyro.module's names ("decoder$$$fc.weight") do.
    return name.replace(".", "/")


class PyroParams(nn.Module):
    """The param sites of a program that no owning module holds, as one module.

    ``fit`` trains, moves, checkpoints and restores modules; this puts the
    tensors of ``pyro.param`` and ``pyro.module`` sites (found as ``SVI`` finds
    them, from a trace) under the same roof. A plain tensor in Pyro's param
    store is turned into an ``nn.Parameter`` in place of it (its data shared),
    as ``PyroModule`` itself does, so the store, the program and this module
    keep holding the same tensor.
    """

    def __init__(self, names: list[str]):
        super().__init__()
        store = pyro.get_param_store()
        self.names = list(names)
        for name in self.names:
            value = store._params[name]
            if not isinstance(value, nn.Parameter):
                value = nn.Parameter(value.detach(), requires_grad=True)
                store._params[name] = value
                store._param_to_name[value] = name
            self.register_parameter(_key(name), value)

    def extra_repr(self):
        return ", ".join(self.names)


def _param_sites(trace):
    out = {}
    for name, node in trace.nodes.items():
        if node["type"] == "param":
            unconstrained = getattr(node["value"], "unconstrained", None)
            out[name] = unconstrained() if callable(unconstrained) else node["value"]
    return out


def program_modules(model, guide, x, args=()) -> list[nn.Module]:
    """Every module to train for a model (and guide) run on a batch.

    The modules that own the programs, plus one :class:`PyroParams` holding
    the param sites of their traces that those modules do not (``pyro.param``
    in a plain function, ``pyro.module`` of a module the program only calls).
    Autoguides create their parameters on this first call.
    """
    found = {}
    with torch.no_grad():
        guide_trace = None
        if guide is not None:
            guide_trace = trace_program(guide, x, *args)
            found.update(_param_sites(guide_trace))
        if model is not None:
            replayed = model if guide_trace is None else poutine.replay(model, trace=guide_trace)
            found.update(_param_sites(trace_program(replayed, x, *args)))
    owners = modules_of(model, guide, named=False)
    ids = {id(t) for t in found.values()}
    # A network the program names is trained as a module (its buffers checkpointed, its mode set) when the
    # program registers all its trainable parameters (pyro.module); one it only calls stays untrained.
    named = [m for m in modules_of(model, guide) if _trainable(m) and all(id(p) in ids for p in _trainable(m))]
    owners += _outermost(named, owners)
    owned = {id(p) for m in owners for p in m.parameters()}
    loose = [name for name, t in found.items()
             if id(t) not in owned and isinstance(t, torch.Tensor) and t.requires_grad]
    return owners + ([PyroParams(loose)] if loose else [])


def _outermost(modules, owners):
    """``modules`` less those inside another of them or inside an owner (a coupling in the flow's list)."""
    def inside(m, others):
        return any(m is not o and any(m is sub for sub in o.modules()) for o in others)

    return [m for m in modules if all(m is not o for o in owners) and not inside(m, [*modules, *owners])]


def _trainable(module):
    return [p for p in module.parameters() if p.requires_grad]


# -- minibatches -----------------------------------------------------------------
def _subsampled(frame) -> bool:
    """A plate the program subsamples itself (``pyro.plate(name, N, subsample=idx)``): Pyro scales it."""
    return frame.full_size is not None and frame.full_size != frame.size


def data_plate(trace: poutine.Trace, site: str, batch_size: int):
    """The name of the vectorized, not subsampled plate of size ``batch_size`` around the data site, or None."""
    frames = [f for f in trace.nodes[site]["cond_indep_stack"]
              if f.vectorized and f.size == batch_size and not _subsampled(f)]
    return frames[0].name if frames else None


def global_latents(trace: poutine.Trace, plate: str | None) -> list[str]:
    """The latent sites outside the data plate (all latents when there is no data plate)."""
    return [n for n in latent_sites(trace)
            if plate is None or all(f.name != plate for f in trace.nodes[n]["cond_indep_stack"])]


class DataPlateScale(Messenger):
    """Scale every sample site inside the plate ``plate`` by N / (that plate's size).

    A minibatch of B examples from N then counts as the whole data set for
    the sites inside the data plate (likelihood and local latents, in model
    and guide), while global latents count once: the semantics of
    ``pyro.plate("data", N, subsample_size=B)``, for programs that write
    ``pyro.plate("data", len(x))``. A plate the program subsamples itself
    (``pyro.plate("data", N, subsample=idx)``) is left alone: Pyro scales it.
    """

    def __init__(self, plate: str, num_data: int):
        super().__init__()
        self.plate, self.num_data = plate, int(num_data)

    def _process_message(self, msg):
        if msg["type"] != "sample":
            return
        for frame in msg["cond_indep_stack"]:
            if frame.name == self.plate:
                if frame.size != self.num_data and not _subsampled(frame):
                    msg["scale"] = msg["scale"] * (self.num_data / frame.size)
                return


def minibatch_plate(trace, guide, x, args, site: str, num_data) -> str | None:
    """The data plate to scale by N/B (:class:`DataPlateScale`) when minibatches change the answer; else None.

    ``trace`` is the model's on the first batch ``x``; ``num_data`` is N.
    Minibatches change the answer when the model has latents outside the data
    plate (global latents). A guide with per-example parameters is refused on
    minibatches (it would be silently wrong), as is a model with global
    latents whose data site is in no plate.

    A model whose latents are all inside the data plate (a VAE) gives the same
    per-example loss either way, so it is left unscaled (and as fast as before).
    """
    b = x.shape[0]
    if num_data is None or b >= num_data or not trace.nodes[site]["is_observed"]:
        return None
    plate = data_plate(trace, site, b)
    if plate is None:
        own = subsampled_plate(trace, site, num_data)
        if own is not None:  # the program subsamples its own plate of size N: Pyro scales it
            if guide is not None:
                _refuse_guide_subsample(guide, trace, x, args, own)
            return None
        if global_latents(trace, None):
            raise ValueError(
                f"data: minibatches of {b} from {num_data} examples need the data site {site!r} inside "
                "pyro.plate(name, len(x)), so that the likelihood can count N/B times against the latents "
                f"{global_latents(trace, None)}; add the plate, or train on the full batch (batch_size={num_data})")
        return None
    if guide is not None:
        _refuse_per_example_guide(guide, x, args, plate, num_data)
    return plate if global_latents(trace, plate) else None


def subsampled_plate(trace: poutine.Trace, site: str, num_data) -> str | None:
    """The plate of size N around the data site that the program subsamples itself
    (``pyro.plate(name, N, subsample=idx)``), or None."""
    frames = [f for f in trace.nodes[site]["cond_indep_stack"]
              if num_data is not None and f.vectorized and f.full_size == num_data and _subsampled(f)]
    return frames[0].name if frames else None


def _refuse_guide_subsample(guide, trace, x, args, plate):
    # An autoguide opens its own pyro.plate(name, N) and draws a random subsample there, unless it is given
    # create_plates; replayed into the model, that subsample overrides the model's own indices.
    node = trace_program(guide, x, *args).nodes.get(plate)
    if node is not None and node["type"] == "sample" and not torch.equal(node["value"], trace.nodes[plate]["value"]):
        raise ValueError(
            f"guide: draws its own subsample of plate {plate!r}, not the indices the model passes, so its rows "
            f"would be paired with other examples; give the autoguide the model's plate: "
            f"{type(guide).__name__}(model, create_plates=lambda x, idx, *a: pyro.plate({plate!r}, N, subsample=idx))")


def _refuse_per_example_guide(guide, x, args, plate, num_data):
    guide_trace = trace_program(guide, x, *args)
    # A param with an event_dim inside the plate has one row per example (Pyro indexes such params when
    # a plate subsamples); pyro.module's parameters carry no event_dim and are shared.
    local = [n for n, node in guide_trace.nodes.items() if node["type"] == "param"
             and node["kwargs"].get("event_dim") is not None
             and any(f.name == plate and f.full_size in (None, f.size) for f in node["cond_indep_stack"])]
    if isinstance(guide, AutoContinuous):
        proto = guide.prototype_trace
        if any(f.name == plate for n in proto.nodes if proto.nodes[n]["type"] == "sample"
               and not proto.nodes[n]["is_observed"] for f in proto.nodes[n]["cond_indep_stack"]):
            local.append(f"{type(guide).__name__} (one joint vector over the latents of plate {plate!r})")
    if local:
        raise ValueError(
            f"guide: has per-example parameters {local} inside plate {plate!r}, but fit trains on minibatches of "
            f"{x.shape[0]} from {num_data} shuffled examples, so each row of them would be fitted to whichever "
            f"examples land there. Use an amortized guide (an encoder q(z|x)), train on the full batch "
            f"(batch_size={num_data}), or subsample the plate yourself: pyro.plate({plate!r}, {num_data}, "
            "subsample=idx) with the indices as a second batch item (data=TensorDataset(x, torch.arange(N))), "
            "given to an autoguide as create_plates=.")
