"""The ``pyro-dgm`` command: demo, train, sample, evaluate, list.

Models and data sets come from :mod:`pyro_dgm.registry`, so every family that
registers a model is trainable here without the CLI naming it.

From Python, :func:`load_run` rebuilds a trained run::

    from pyro_dgm.cli import load_run
    run = load_run("runs/vae")              # what `pyro-dgm train --out runs/vae` wrote
    x = pyro_dgm.programs.sample_program(run.module.model, 16)
    print(run.meta["model"], run.meta["model_options"])
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pyro
import torch

from . import __version__, registry
from .checkpoint import fsync_dir, write_atomic

RUN_FILE, WEIGHTS_FILE, CKPT_FILE = "run.json", "model.pt", "checkpoint.pt"
# A save writes the weights to WEIGHTS_TMP and the new run.json to PENDING_FILE, then renames both.
WEIGHTS_TMP, PENDING_FILE = ".model.pt.tmp", ".run.json.pending"
RUN_FILES = (RUN_FILE, WEIGHTS_FILE, CKPT_FILE, WEIGHTS_TMP, PENDING_FILE)
WEIGHTS_KEY = "weights_sha256"  # run.json's record of the model.pt it belongs to
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class UsageError(ValueError):
    """A bad argument or a broken run folder: reported on stderr with exit status 2."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in --help (None: the model's own, listed in the epilog); epilogs kept as written."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyro-dgm", description="Deep generative models as Pyro programs.",
                                formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, help, **kwargs):
        return sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter, **kwargs)

    d = command("demo", help="train a VAE and baselines on digits and a 2-D toy; write figures and metrics")
    d.add_argument("--out", default="runs/demo", help="folder for figures, metrics and checkpoints")
    d.add_argument("--device", default="auto", help="torch device: cpu, cuda, cuda:1, or auto (CUDA if there is one)")
    d.add_argument("--seed", type=int, default=0, help="seeds every part before its model is built")
    d.add_argument("--quick", action="store_true", help="a few epochs only (for a smoke test)")

    t = command("train", help="train one registered model on one data set", epilog=_models_epilog())
    t.add_argument("--model", required=True, help="see `pyro-dgm list` and below")
    t.add_argument("--data", required=True, help="see `pyro-dgm list`")
    t.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a model or objective option (repeatable), e.g. latent_dim=4, hidden=(128,128), "
                        "loss=wgan-gp; VALUE is a Python literal or else a string; the options of each "
                        "model are listed below")
    t.add_argument("--data-dir", default=None, help="folder with the data set's files (MNIST, Fashion-MNIST, "
                                                    "CIFAR-10); nothing is downloaded")
    t.add_argument("--epochs", type=int, default=None, help="passes over the data (default: the model's)")
    t.add_argument("--steps", type=int, default=None, help="updates; replaces the model's epochs unless "
                                                          "--epochs is given too")
    t.add_argument("--batch-size", type=int, default=None, help="examples per update (default: the model's)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: the model's)")
    t.add_argument("--device", default="auto",
                   help="torch device: cpu, cuda, cuda:1, or auto (CUDA if there is one; a GPU per torchrun process)")
    t.add_argument("--compile", action="store_true", help="torch.compile the networks (fit(compile=True))")
    t.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999) and save it as the "
                        "run's weights (callbacks.WeightAverage); sharper GAN and score-model samples")
    t.add_argument("--seed", type=int, default=0, help="seeds Pyro, torch, NumPy and Python before the model "
                                                      "is built, and the data order")
    t.add_argument("--out", default=None, help="run folder (default runs/MODEL-DATA)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    t.add_argument("--overwrite", action="store_true", help="train afresh into a folder that holds a run")
    t.add_argument("--checkpoint-every", type=int, default=None,
                   help="steps between checkpoints (always one per epoch and at the end)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = command("sample", help="draw samples from a trained run")
    _run_folder(s)
    s.add_argument("--num", type=int, default=64, help="number of samples (the figure shows up to 100)")
    s.add_argument("--out", default=None, help="figure path, its format from the suffix (.png, .pdf, .svg, .jpg, "
                                               "...; default RUN/samples.png); the tensor beside it, .pt")
    s.add_argument("--seed", type=int, default=0, help="seeds Pyro, torch, NumPy and Python")

    e = command("evaluate", help="test NLL (nats, bits/dim) of a trained run")
    _run_folder(e)
    e.add_argument("--split", default="test", choices=("train", "val", "test"), help="data split to score")
    e.add_argument("--num-particles", type=int, default=100, help="IWAE samples for latent-variable models")
    e.add_argument("--seed", type=int, default=0, help="seed of the importance samples")
    e.add_argument("--data-dir", default=None, help="folder with the data set's files (default: the one the run "
                                                    "was trained with)")

    command("list", help="registered models and data sets")
    return p


def _models_epilog() -> str:
    """Each model's fit defaults and --model-option keys with their defaults, for `train --help`."""
    registry._load_all()
    lines = ["per-model defaults (fit settings; --model-option keys):"]
    for name, spec in sorted(registry.MODELS.items()):
        fit = " ".join(f"{k}={v}" for k, v in spec.fit_defaults.items() if k not in ("image", "optimizer_kwargs"))
        opts = " ".join(f"{k}={v!r}" for k, v in model_options(spec).items()) or "none"
        lines.append(f"  {name} ({spec.family}): {fit}; options: {opts}")
    return "\n".join(lines)


def _run_folder(parser):
    # Positional as well as --run: `torchrun -m pyro_dgm evaluate --run R` fails, torchrun's own parser
    # taking "--run" for an abbreviation of its --run-path (PyTorch issue 120601; "-m pyro_dgm --" avoids it).
    parser.add_argument("run_folder", nargs="?", metavar="RUN", help="run folder written by `pyro-dgm train`")
    parser.add_argument("--run", default=None, help="the same, as an option")


def _one_run_folder(args):
    if "run_folder" not in args:
        return
    if args.run is not None and args.run_folder is not None and args.run != args.run_folder:
        raise UsageError(f"two run folders: {args.run_folder} and --run {args.run}; give one")
    args.run = args.run if args.run is not None else args.run_folder
    if args.run is None:
        raise UsageError(f"the run folder is required: pyro-dgm {args.command} RUN (or --run RUN)")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        _one_run_folder(args)
        return {"demo": cmd_demo, "train": cmd_train, "sample": cmd_sample,
                "evaluate": cmd_evaluate, "list": cmd_list}[args.command](args)
    except (UsageError, ValueError) as err:
        print(f"pyro-dgm {args.command}: error: {err}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------ helpers

def _positive(name, value):
    if value is not None and value < 1:
        raise UsageError(f"--{name}: expected an integer >= 1, got {value}")


def model_options(spec) -> dict:
    """{name: default} of the options ``--model-option`` accepts for a registered model (builder and objective)."""
    return {**registry.options_of(spec.build), **registry.options_of(spec.objective)}


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):  # a bare word such as wgan-gp or hutchinson
        return text


def parse_model_options(spec, pairs) -> dict:
    """``["key=value", ...]`` as a dict, each key checked against :func:`model_options` before any work."""
    accepted, options = model_options(spec), {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--model-option: expected KEY=VALUE, got {pair!r}")
        if key not in accepted:
            raise UsageError(f"--model-option: model {spec.name!r} has no option {key!r}; "
                             f"its options are {', '.join(sorted(accepted)) or 'none'}")
        options[key] = _literal(value)
        try:
            json.dumps(options[key])  # recorded in run.json
        except TypeError:
            raise UsageError(f"--model-option: {key}={value} is not a number, string, tuple, list or dict") from None
    return options


def _split_options(spec, options: dict) -> tuple:
    """(builder options, objective options)."""
    objective = registry.options_of(spec.objective)
    return ({k: v for k, v in options.items() if k in registry.options_of(spec.build)},
            {k: v for k, v in options.items() if k in objective})


def _recorded_build_options(spec, options: dict) -> dict:
    """The builder's options as this run uses them: its current defaults (those JSON can hold) and the given
    ones. Recorded in run.json, so that a run still loads after a release changes a default."""
    recorded = {}
    for key, value in {**registry.options_of(spec.build), **_split_options(spec, options)[0]}.items():
        try:
            json.dumps(value)
        except TypeError:
            continue
        recorded[key] = value
    return recorded


def _from_json(value):
    """JSON turns tuples into lists; the builders take tuples (hidden=(128, 128))."""
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


def _absolute_dir(data_dir):
    """``--data-dir`` as an absolute path, ``~`` expanded (recorded so, a run evaluates from any folder)."""
    return None if data_dir is None else str(Path(data_dir).expanduser().resolve())


def _digits_labels(split, seed, data_dir=None):
    from .data import load_digits_labels

    return load_digits_labels(split, seed)


#: Label loaders for the class-conditional models, by data set. Listed here by hand because the
#: data registry (DataSpec) does not carry labels yet.
LABELS = {"digits": _digits_labels, "digits-continuous": _digits_labels}


def labels_for(spec, dspec, split: str, seed: int, data_dir=None):
    """The labels of a split for a class-conditional model (None for the others); UsageError without labels."""
    _check_labels(spec, dspec)
    return LABELS[dspec.name](split, seed, data_dir) if spec.conditional else None


def _check_labels(spec, dspec):
    if spec.conditional and dspec.name not in LABELS:
        raise UsageError(f"--data: model {spec.name!r} is class-conditional and needs labels, which only "
                         f"{', '.join(sorted(LABELS))} have here; got {dspec.name!r}")


def _num_classes(spec, meta_options: dict) -> int:
    return int(meta_options.get("num_classes", model_options(spec).get("num_classes", 10)))


def build_run(model_name: str, data_name: str, data_dir=None, seed: int = 0, options=None):
    """(spec, module, train data, data spec, image flag) for a registered model and data set."""
    spec, dspec = registry.get_model(model_name), registry.get_data(data_name)
    if dspec.kind not in spec.data_kinds:
        raise UsageError(
            f"--data: model {model_name!r} takes {'/'.join(spec.data_kinds)} data, "
            f"but {data_name!r} is {dspec.kind}")
    _check_labels(spec, dspec)
    image = bool(spec.fit_defaults.get("image", False))
    x = dspec.load("train", seed, data_dir, image=image)
    module = spec.build(tuple(x.shape[1:]), dspec.kind, **_split_options(spec, options or {})[0])
    return spec, module, x, dspec, image


def _objective(spec, module, kind, options=None):
    if spec.objective is None:
        return None
    return spec.objective(module=module, data_kind=kind, **_split_options(spec, options or {})[1])


def _programs(module):
    return module.model, getattr(module, "guide", None)


def _brief(err: BaseException) -> str:
    """An exception as one short line (torch's messages span several)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _no_run_json(run_dir: Path) -> UsageError:
    return UsageError(f"--run: {str(run_dir)!r} has no {RUN_FILE}; train into it with `pyro-dgm train --out`")


def _meta_problem(meta) -> str | None:
    """What makes a parsed run.json unusable, or None."""
    if not isinstance(meta, dict):
        return "expected a JSON object"
    for key in ("model", "data"):
        if not isinstance(meta.get(key), str):
            return f"{key!r} should be a name"
    shape = meta.get("event_shape")
    if not (isinstance(shape, list) and shape
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)):
        return "'event_shape' should be a list of positive integers"
    if not isinstance(meta.get("seed"), int) or isinstance(meta.get("seed"), bool):
        return "'seed' should be an integer"
    if not isinstance(meta.get("data_dir"), (str, type(None))):
        return "'data_dir' should be a path or null"
    if not isinstance(meta.get(WEIGHTS_KEY, ""), str):
        return f"{WEIGHTS_KEY!r} should be a hex digest"
    if not isinstance(meta.get("build_options", {}), dict):
        return "'build_options' should be an object"
    if not isinstance(meta.get("model_options", {}), dict):
        return "'model_options' should be an object"
    return None


def _read_meta(path: Path) -> dict:
    """A run.json, parsed and checked; UsageError saying what is wrong with it."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UsageError(f"--run: cannot read {str(path)!r} ({_brief(err)})") from err
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise UsageError(f"--run: {str(path)!r} is not valid JSON ({_brief(err)})") from err
    problem = _meta_problem(meta)
    if problem:
        raise UsageError(f"--run: {str(path)!r} is not a run record written by `pyro-dgm train`: {problem}")
    return meta


def _pending_meta(run_dir: Path, digest: str) -> dict | None:
    """The run.json of a save interrupted between its two renames, if it belongs to model.pt."""
    path = run_dir / PENDING_FILE
    if not path.is_file():
        return None
    try:
        meta = _read_meta(path)
    except UsageError:  # a save killed while writing it: model.pt was not replaced yet
        return None
    return meta if meta.get(WEIGHTS_KEY) == digest else None


def _run_meta(run_dir: Path, digest: str) -> dict:
    """run.json of a run folder, checked against the sha256 of its model.pt."""
    meta = _pending_meta(run_dir, digest)
    if meta is not None:
        return meta
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise _no_run_json(run_dir)
    meta = _read_meta(path)
    if meta.get(WEIGHTS_KEY, digest) != digest:  # run.json written before WEIGHTS_KEY: not checked
        raise UsageError(
            f"--run: {str(run_dir / WEIGHTS_FILE)!r} is not the model.pt that {RUN_FILE} records (sha256 differs): "
            f"it was changed or not completely written; rewrite both with `pyro-dgm train --resume --out {run_dir}` "
            "and the run's --model and --data")
    return meta


def _read_weights(run_dir: Path) -> bytes:
    """The bytes of a run folder's model.pt, after checking the folder is a run."""
    if not run_dir.exists():
        raise UsageError(f"--run: {str(run_dir)!r} does not exist")
    if not run_dir.is_dir():
        raise UsageError(f"--run: {str(run_dir)!r} is not a folder")
    if not ((run_dir / RUN_FILE).is_file() or (run_dir / PENDING_FILE).is_file()):
        raise _no_run_json(run_dir)
    path = run_dir / WEIGHTS_FILE
    if not path.is_file():
        if not (run_dir / RUN_FILE).is_file():  # only a pending run.json, of a first save killed early
            raise _no_run_json(run_dir)
        raise UsageError(f"--run: {str(run_dir)!r} has {RUN_FILE} but no {WEIGHTS_FILE}; train into it again")
    try:
        return path.read_bytes()
    except OSError as err:
        raise UsageError(f"--run: cannot read {str(path)!r} ({_brief(err)})") from err


def _registered_specs(meta: dict, run_dir: Path):
    """(model spec, data spec) that a run.json names."""
    try:
        spec, dspec = registry.get_model(meta["model"]), registry.get_data(meta["data"])
    except ValueError as err:
        raise UsageError(f"--run: {str(run_dir / RUN_FILE)!r}: {' '.join(str(err).split())}") from err
    if dspec.kind not in spec.data_kinds:
        raise UsageError(f"--run: {str(run_dir / RUN_FILE)!r} pairs model {meta['model']!r} with "
                         f"{dspec.kind} data {meta['data']!r}, which it does not take")
    return spec, dspec


def _build(spec, dspec, meta: dict, given: dict, run_dir: Path):
    """The module of a run.json's model, built with the options ``given``."""
    shape = tuple(meta["event_shape"])
    options = {k: _from_json(v) for k, v in given.items()}
    try:
        return spec.build(shape, dspec.kind, **_split_options(spec, options)[0])
    except Exception as err:  # a model's constructor may refuse a shape in its own way
        raise UsageError(f"--run: {str(run_dir / RUN_FILE)!r}: cannot build model {meta['model']!r} "
                         f"for event_shape {list(shape)} ({_brief(err)})") from err


def _build_with_weights(spec, dspec, meta: dict, weights: bytes, run_dir: Path):
    """The module a run.json describes, holding the weights of its model.pt."""
    # Runs before build_options hold the given options only; options added since then take their old value.
    given = {**spec.options_added, **meta.get("model_options", {})}
    recorded = {**spec.options_added, **meta.get("build_options", {}), **meta.get("model_options", {})}
    module = _build(spec, dspec, meta, recorded, run_dir)
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"it holds a {type(state).__name__}, not a state dict")
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            module = _built_without_recorded_defaults(spec, dspec, meta, given, state, run_dir, err)
    except Exception as err:  # torch raises several types for a torn or foreign file
        raise UsageError(f"--run: {str(run_dir / WEIGHTS_FILE)!r} does not hold the weights of a "
                         f"{meta['model']!r} model ({_brief(err)})") from err
    return module


def _built_without_recorded_defaults(spec, dspec, meta, given, state, run_dir, err):
    """The module built from the given options only, if it takes ``state``; else ``err`` is raised.

    Runs of release 0.1.0 recorded in build_options a class default that their builder overrode (the
    Bernoulli output of an autoregressive model trained on real values, which was a Gaussian mixture).
    """
    module = _build(spec, dspec, meta, given, run_dir)
    try:
        module.load_state_dict(state)
    except RuntimeError:
        raise err from None
    return module


class Run(NamedTuple):
    """A trained run folder, rebuilt by :func:`load_run`."""

    meta: dict  #: run.json: model, data, seed, model_options, event_shape, steps, epochs, final_loss, ...
    spec: registry.ModelSpec  #: the registered model
    data_spec: registry.DataSpec  #: the registered data set (``data_spec.load(split, seed, data_dir)``)
    module: torch.nn.Module  #: the model with the trained weights, in eval mode: ``module.model``, ``module.guide``


def load_run(run_dir) -> Run:
    """Rebuild the trained model of a folder written by ``pyro-dgm train``, on the CPU.

    Returns a :class:`Run` ``(meta, spec, data_spec, module)``; ``module.model``
    (and ``module.guide``) are the Pyro programs, ready for
    :func:`pyro_dgm.evaluate`, :func:`pyro_dgm.to_arviz` or
    :func:`pyro_dgm.programs.sample_program`. The model is built with the
    run's ``--model-option`` values. A broken folder (missing, no run.json,
    bad JSON, unknown model, torn or foreign model.pt, model.pt not the one
    run.json records) is a one-line :class:`UsageError` (a ``ValueError``).
    Nothing in the folder is written.
    """
    run_dir = Path(run_dir)
    weights = _read_weights(run_dir)
    meta = _run_meta(run_dir, _sha256(weights))
    spec, dspec = _registered_specs(meta, run_dir)
    module = _build_with_weights(spec, dspec, meta, weights, run_dir)
    module.eval()
    return Run(meta, spec, dspec, module)


def _write_synced(path: Path, data: bytes) -> None:
    """Write a new file and fsync it; a plain open, so its mode follows the umask (0644 under 022)."""
    path.unlink(missing_ok=True)
    try:
        with open(path, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _finish_pending(out: Path) -> None:
    """Complete a save interrupted between its two renames; drop the leftovers of one killed earlier."""
    weights = out / WEIGHTS_FILE
    if weights.is_file() and _pending_meta(out, _sha256(weights.read_bytes())) is not None:
        os.replace(out / PENDING_FILE, out / RUN_FILE)
    (out / PENDING_FILE).unlink(missing_ok=True)
    (out / WEIGHTS_TMP).unlink(missing_ok=True)


def save_run(out, state_dict: dict, meta: dict) -> dict:
    """Write model.pt and run.json so that a crash at any moment leaves the old pair or the new one.

    run.json records the sha256 of model.pt. Both are written in full to temp
    files and fsynced; then model.pt is renamed into place, then run.json. A
    crash between the two renames leaves a pending run.json that matches
    model.pt: :func:`load_run` reads it and the next save completes it.
    Returns the meta as written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    weights = buf.getvalue()
    meta = {**meta, WEIGHTS_KEY: _sha256(weights)}
    _finish_pending(out)
    weights_tmp, pending = out / WEIGHTS_TMP, out / PENDING_FILE
    try:
        _write_synced(weights_tmp, weights)
        _write_synced(pending, (json.dumps(meta, indent=2) + "\n").encode())
        os.replace(weights_tmp, out / WEIGHTS_FILE)
    except BaseException:
        weights_tmp.unlink(missing_ok=True)
        pending.unlink(missing_ok=True)
        raise
    fsync_dir(out)
    os.replace(pending, out / RUN_FILE)
    fsync_dir(out)
    return meta


def check_train_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train over a run unless --resume or --overwrite, and to resume from nothing."""
    if resume and overwrite:
        raise UsageError("--resume continues the run and --overwrite replaces it: pass one of them")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {str(out)!r} is a file, not a folder")
    found = [name for name in (RUN_FILE, WEIGHTS_FILE, CKPT_FILE) if (out / name).exists()]
    if resume and not (out / CKPT_FILE).is_file():
        afresh = "--overwrite instead of --resume" if found else "no --resume"
        raise UsageError(f"--resume: {str(out)!r} has no {CKPT_FILE} to resume from; "
                         f"train afresh with {afresh}")
    if found and not (resume or overwrite):
        raise UsageError(f"--out: {str(out)!r} already holds a run ({', '.join(found)}); "
                         "pass --resume to continue it or --overwrite to train afresh over it")


#: How the figures `pyro-dgm sample` writes begin, by suffix (only these may be replaced inside a run folder).
FIGURE_SIGNATURES = {".png": (PNG_SIGNATURE,), ".jpg": (b"\xff\xd8\xff",), ".jpeg": (b"\xff\xd8\xff",),
                     ".pdf": (b"%PDF",), ".svg": (b"<?xml", b"<svg"), ".eps": (b"%!PS",), ".ps": (b"%!PS",)}


def _is_sample_output(path: Path) -> bool:
    """True for what `pyro-dgm sample` writes: a figure (PNG, JPEG, PDF, SVG, PS), or a .pt file holding a tensor."""
    try:
        if path.suffix == ".pt":
            return isinstance(torch.load(path, map_location="cpu", weights_only=True), torch.Tensor)
        with open(path, "rb") as f:
            return f.read(8).startswith(FIGURE_SIGNATURES.get(path.suffix.lower(), (PNG_SIGNATURE,)))
    except Exception:  # unreadable, or a .pt that is not a plain tensor: not ours to replace
        return False


def _holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def check_sample_paths(png: Path) -> tuple:
    """(figure path, tensor path beside it); UsageError if either would replace a run's own files.

    In a folder that holds a run, only earlier sample outputs may be
    replaced; a run's own files (run.json, model.pt, checkpoint.pt) never.
    """
    if not png.suffix:  # matplotlib would append .png
        png = png.with_suffix(".png")
    if png.suffix == ".pt":
        raise UsageError(f"--out: {str(png)!r} should be an image path such as samples.png; "
                         "the tensor is written beside it with the suffix .pt")
    from . import plots

    tensor = png.with_suffix(".pt")
    for target in (png, tensor):
        real = target.resolve()
        if not real.exists():
            continue
        if real.name in RUN_FILES or (_holds_run(real.parent) and not _is_sample_output(real)):
            raise UsageError(f"--out: writing samples to {str(target)!r} would replace a file of the run "
                             f"in {str(target.parent)!r}; choose another --out")
    try:
        plots.figure_format(png)
    except ValueError as err:
        raise UsageError(f"--out: {str(err).removeprefix('path: ')}") from None
    return png, tensor


def draw(module, n, y=None):
    """n draws of site "x" of a registered module's program (so handlers around the program apply).

    A class-conditional program is run as ``model(None, y)`` with one label per draw.
    """
    from .programs import sample_program

    return sample_program(module.model, n, args=() if y is None else (y,))


def _speaks() -> bool:
    """Whether this process reports: always, except under torchrun, where rank 0 speaks for all."""
    return os.environ.get("RANK", "0") == "0"


def _stage(text):
    """One line per stage of a long command, on stderr (stdout keeps the results); rank 0's only."""
    if _speaks():
        print(f"pyro-dgm: {text}", file=sys.stderr, flush=True)


def save_samples(x, path, dspec, columns=None):
    """The figure of samples: a scatter of points, else a grid of up to 100 images laid out in the data set's
    image shape (flat examples included), ``columns`` per row if given."""
    from . import plots

    if dspec.kind == "points":
        fig = plots.scatter_2d(x, path=path)
    else:
        shape = dspec.image_shape if dspec.image_shape and math.prod(dspec.image_shape) == x[0].numel() else None
        fig = plots.sample_grid(x[:100], nrow=10, path=path, image_shape=shape, columns=columns)
    import matplotlib.pyplot as plt

    plt.close(fig)


# ------------------------------------------------------------------ commands

def cmd_list(args):
    registry._load_all()
    print(f"{'model':16s} {'family':15s} {'data kinds':27s} description")
    for name, spec in sorted(registry.MODELS.items(), key=lambda item: (item[1].family, item[0])):
        print(f"{name:16s} {spec.family:15s} {'/'.join(spec.data_kinds):27s} {spec.description}")
    print(f"\n{'data set':16s} {'kind':15s} description")
    for name, d in sorted(registry.DATA.items()):
        print(f"{name:16s} {d.kind:15s} {d.description}")
    return 0


class RunIdentity:
    """What a run trains (model, data, seed, EMA, model options), kept in fit's checkpoint as a callback's state.

    fit saves every callback's ``state_dict`` in the checkpoint and hands it
    back to ``load_state_dict`` on resume, before the first step: there a run
    resumed with other data (``moons`` for ``8gaussians``: the same shapes, so
    no weight would disagree) is refused. Checkpoints written without it resume
    unchecked.
    """

    def __init__(self, **identity):
        self.identity = identity

    def state_dict(self) -> dict:
        return dict(self.identity)

    def load_state_dict(self, saved: dict) -> None:
        changed = [f"--{k.replace('_', '-')} {saved[k]} (now {v})" for k, v in self.identity.items()
                   if k in saved and saved[k] != v]
        if changed:
            raise UsageError(f"--resume: the checkpoint was trained with {', '.join(changed)}; resume with the same "
                             "settings, or train afresh with --overwrite")


def _checkpoint_identity(path: Path) -> dict:
    """The :class:`RunIdentity` state in the checkpoint at ``path`` ({} if it has none)."""
    from .checkpoint import load

    state = load(path, map_location="cpu")
    for kind, saved in zip(state.get("callback_kinds") or [], state.get("callbacks", [])):
        if kind.endswith(".RunIdentity"):
            return saved
    return {}


def _resumed_options(out: Path, options: dict, given: bool, identity: dict) -> dict:
    """A resumed run keeps the model options it was trained with, those of the checkpoint it resumes (an
    interrupted --overwrite leaves the old run's run.json beside the new checkpoint), else of its run.json;
    other ones given anew are refused."""
    if "model_options" in identity:
        recorded = dict(identity["model_options"])
    elif (out / RUN_FILE).is_file():
        recorded = {k: _from_json(v) for k, v in _read_meta(out / RUN_FILE).get("model_options", {}).items()}
    else:
        return options
    if given and recorded != {k: _from_json(v) for k, v in options.items()}:
        raise UsageError(f"--model-option: the run in {str(out)!r} was trained with {recorded}; "
                         "resume it with those (or none), or train afresh with --overwrite")
    return recorded


def cmd_train(args):
    from .callbacks import WeightAverage
    from .fit import fit

    for name in ("epochs", "steps", "batch_size", "checkpoint_every"):
        _positive(name.replace("_", "-"), getattr(args, name))
    if args.ema is not None and not 0.0 <= args.ema < 1.0:
        raise UsageError(f"--ema: expected a decay in [0, 1), such as 0.999, got {args.ema}")
    out = Path(args.out or f"runs/{args.model}-{args.data}")
    options = parse_model_options(registry.get_model(args.model), args.model_option)
    check_train_folder(out, args.resume, args.overwrite)
    identity = {"model": args.model, "data": args.data, "seed": args.seed, "ema": args.ema}
    if args.resume:  # the checkpoint's identity first: other data is named before any shape disagrees
        saved = _checkpoint_identity(out / CKPT_FILE)
        RunIdentity(**identity).load_state_dict(saved)
        options = _resumed_options(out, options, bool(args.model_option), saved)
    args.data_dir = _absolute_dir(args.data_dir)
    pyro.set_rng_seed(args.seed)  # before the model is built: its initial weights are part of the run
    spec, module, x, dspec, image = build_run(args.model, args.data, args.data_dir, args.seed, options)
    y = labels_for(spec, dspec, "train", args.seed, args.data_dir)
    kwargs = {k: v for k, v in spec.fit_defaults.items() if k != "image"}
    for key in ("epochs", "steps", "batch_size", "lr"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if args.steps is not None and args.epochs is None:
        kwargs.pop("epochs", None)
    model, guide = _programs(module)
    t0 = time.perf_counter()
    data = x if y is None else torch.utils.data.TensorDataset(x, y)  # batches (x, y): model(x, y)
    callbacks = [RunIdentity(**identity, model_options=options)]
    if args.ema is not None:
        callbacks.append(WeightAverage(module, decay=args.ema))
    with _resume_hint(out):
        result = fit(model, guide, data, objective=_objective(spec, module, dspec.kind, options), device=args.device,
                     seed=args.seed, checkpoint=out / CKPT_FILE, checkpoint_every=args.checkpoint_every,
                     resume=args.resume, progress=False if args.no_progress else None, compile=args.compile,
                     callbacks=callbacks, **kwargs)
    seconds = time.perf_counter() - t0
    if not _speaks():  # under torchrun rank 0 writes the run and speaks for all
        return 0
    meta = {"model": args.model, "data": args.data, "data_dir": args.data_dir, "seed": args.seed, "ema": args.ema,
            "model_options": options, "build_options": _recorded_build_options(spec, options),
            "event_shape": list(x.shape[1:]), "steps": result.steps, "epochs": result.epochs,
            "final_loss": result.loss, "updates": result.updates, "train_seconds": round(seconds, 2)}
    save_run(out, module.to("cpu").state_dict(), meta)
    print(f"trained {args.model} on {args.data}: {result.steps} steps, {result.epochs} epochs, "
          f"{_final_losses(result)}, {seconds:.1f} s")
    print(f"run folder: {out}  (checkpoint {out / CKPT_FILE}, weights {out / WEIGHTS_FILE})")
    return 0


@contextlib.contextmanager
def _resume_hint(out: Path):
    """A fit stopped by SIGINT or SIGTERM (its message names fit's resume=True) also says how the CLI continues."""
    from .safety import FitInterrupted

    try:
        yield
    except FitInterrupted:
        _stage(f"interrupted: the same command with --resume continues from {out / CKPT_FILE}")
        raise


def _final_losses(result) -> str:
    """"final loss 0.1234", or with several groups each one's updates and last loss: a GAN's
    steps count batches, so its generator makes steps / n_critic updates (issue 15)."""
    if len(result.losses) == 1:
        return f"final loss {result.loss:.4f}"
    return "final losses " + ", ".join(f"{group} {values[-1]:.4f} ({len(values)} updates)" if values
                                       else f"{group} - (0 updates)" for group, values in result.losses.items())


def cmd_sample(args):
    _positive("num", args.num)
    meta, spec, dspec, module = load_run(args.run)
    path, tensor = check_sample_paths(Path(args.out or Path(args.run) / "samples.png"))
    if not _speaks():  # under torchrun rank 0 draws and writes; sampling needs no other rank
        return 0
    pyro.set_rng_seed(args.seed)
    _stage(f"drawing {args.num} samples from {meta['model']}")
    y = columns = None  # a class-conditional model draws the classes in turn: each grid row shows each class
    if spec.conditional:
        columns = _num_classes(spec, meta.get("model_options", {}))
        y = torch.arange(args.num) % columns
    with torch.no_grad():
        x = draw(module, args.num, y)
    _stage(f"writing {path} and {tensor.name}")
    # Each file whole or not at all; the tensor (the draws themselves) first, then its picture.
    write_atomic(tensor, lambda f: torch.save(x, f), "samples")
    save_samples(x, path, dspec, columns)
    print(f"{args.num} samples of {meta['model']}: {path} (tensor {tensor})")
    return 0


# Data sets dequantized from discrete levels: their discrete bits/dim is what papers report.
NUM_LEVELS = {"digits-continuous": 17, "cifar10": 256}


def cmd_evaluate(args):
    _positive("num-particles", args.num_particles)
    meta, spec, dspec, module = load_run(args.run)
    image, data_dir = bool(spec.fit_defaults.get("image", False)), _absolute_dir(args.data_dir or meta.get("data_dir"))
    x = dspec.load(args.split, meta["seed"], data_dir, image=image)
    y = labels_for(spec, dspec, args.split, meta["seed"], data_dir)
    where = f"{meta['model']} on {meta['data']} ({args.split}, {x.shape[0]} examples)"
    _stage(f"scoring {where}")
    if spec.family == "gan":  # sampling is local: rank 0 alone scores and prints
        if _speaks():
            print(f"{where}: {_sample_quality(module, x, dspec, y)} (a GAN has no likelihood)")
        return 0
    res, how = _likelihood(spec, dspec, module, x if y is None else (x, y), args)  # under torchrun, shared
    if not _speaks():
        return 0
    if "bits_per_dim_discrete" in res:  # dequantized data: the number comparable with discrete models
        bits = f"{res['bits_per_dim_discrete']:.4f} bits/dim of the {NUM_LEVELS[dspec.name]}-level data"
    else:
        bits = f"{res['bits_per_dim']:.4f} bits/dim"
    print(f"{where}: NLL {res['nll']:.3f} ± {res['nll_stderr']:.3f} nats, {bits} ({how})")
    return 0


def _likelihood(spec, dspec, module, data, args):
    """(result dict, how it was computed) for every family that has a density: pyro_dgm.evaluate's dispatch.

    ``data`` is the tensor, or ``(x, labels)`` for a class-conditional model.
    """
    from .evaluation import evaluate

    x = data[0] if isinstance(data, tuple) else data
    if spec.family == "ebm" and tuple(x.shape[1:]) != (2,):
        raise UsageError("evaluate: an EBM's log Z is integrated on a grid in 2-D only; in higher "
                         "dimensions estimate it with pyro_dgm.evaluate(..., log_normalizer='ais')")
    guide = getattr(module, "guide", None)
    res = evaluate(module.model, data, guide=guide, num_particles=args.num_particles if guide else 1, seed=args.seed,
                   num_levels=NUM_LEVELS.get(dspec.name), log_normalizer="grid" if spec.family == "ebm" else None,
                   all_ranks=True)  # under torchrun every rank runs this command
    return res, res["method"]


#: The data sets the shipped digits classifier scores (its Frechet distance, precision and recall).
CLASSIFIER_DATA = ("digits", "digits-continuous")
MMD_EXAMPLES = 1000  # MMD^2 on images compares this many samples with as many test images (its cost is quadratic)


def _sample_quality(module, x, dspec, y=None):
    """Sample quality against ``x``; a class-conditional generator draws with the data's labels ``y``.

    The classifier's scores on the digits; MMD^2 elsewhere (in pixel space for images other than digits)."""
    from . import metrics

    images = dspec.kind != "points"
    if images and dspec.name not in CLASSIFIER_DATA:
        x, y = x[:MMD_EXAMPLES], None if y is None else y[:MMD_EXAMPLES]
    pyro.set_rng_seed(0)
    with torch.no_grad():
        samples = draw(module, x.shape[0], y)
    if not images:
        return f"MMD^2 {metrics.mmd2(samples, x):.4f} between {x.shape[0]} samples and the data"
    if dspec.name not in CLASSIFIER_DATA:
        return _pixel_mmd(samples, x)
    q = metrics.digits_quality(samples.reshape(x.shape[0], -1), x.reshape(x.shape[0], -1))
    return f"classifier Frechet distance {q['frechet']:.3f}, precision {q['precision']:.3f}, recall {q['recall']:.3f}"


def _pixel_mmd(samples, x) -> str:
    """MMD^2 between images, its kernel widths sqrt(D / 64) times those for the 8x8 digits (distances grow so)."""
    from . import metrics

    widths = [b * math.sqrt(x[0].numel() / 64) for b in metrics.DEFAULT_BANDWIDTHS]
    return (f"MMD^2 {metrics.mmd2(samples, x, bandwidths=widths):.4f} between {x.shape[0]} samples and the data, "
            "in pixel space (the classifier's Frechet distance, precision and recall are for the digits only)")


def cmd_demo(args):
    from .demo import run_demo

    run_demo(Path(args.out), device=args.device, seed=args.seed, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
