"""The ``pyro-dgm`` command: demo, train, sample, evaluate, list.

Models and data sets come from :mod:`pyro_dgm.registry`, so every family that
registers a model is trainable here without the CLI naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import registry

RUN_FILE, WEIGHTS_FILE, CKPT_FILE = "run.json", "model.pt", "checkpoint.pt"


class UsageError(Exception):
    """A bad argument: reported on stderr with exit status 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyro-dgm", description="Deep generative models as Pyro programs.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train a VAE and baselines on digits and a 2-D toy; write figures and metrics")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--device", default="cpu")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quick", action="store_true", help="a few epochs only (for a smoke test)")

    t = sub.add_parser("train", help="train one registered model on one data set")
    t.add_argument("--model", required=True, help="see `pyro-dgm list`")
    t.add_argument("--data", required=True, help="see `pyro-dgm list`")
    t.add_argument("--data-dir", default=None, help="folder with MNIST files (nothing is downloaded)")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--device", default="cpu")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="run folder (default runs/MODEL-DATA)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    t.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
    t.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("--run", required=True, help="run folder written by `pyro-dgm train`")
    s.add_argument("--num", type=int, default=64)
    s.add_argument("--out", default=None, help="PNG path (default RUN/samples.png)")
    s.add_argument("--seed", type=int, default=0)

    e = sub.add_parser("evaluate", help="test NLL (nats, bits/dim) of a trained run")
    e.add_argument("--run", required=True)
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--num-particles", type=int, default=100, help="IWAE samples for latent-variable models")
    e.add_argument("--seed", type=int, default=0)

    sub.add_parser("list", help="registered models and data sets")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"demo": cmd_demo, "train": cmd_train, "sample": cmd_sample,
                "evaluate": cmd_evaluate, "list": cmd_list}[args.command](args)
    except (UsageError, ValueError) as err:
        print(f"pyro-dgm {args.command}: error: {err}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------ helpers

def _positive(name, value):
    if value is not None and value < 1:
        raise UsageError(f"--{name}: expected an integer >= 1, got {value}")


def build_run(model_name: str, data_name: str, data_dir=None, seed: int = 0):
    """(spec, module, train data, data spec, image flag) for a registered model and data set."""
    spec, dspec = registry.get_model(model_name), registry.get_data(data_name)
    if dspec.kind not in spec.data_kinds:
        raise UsageError(
            f"--data: model {model_name!r} takes {'/'.join(spec.data_kinds)} data, "
            f"but {data_name!r} is {dspec.kind}")
    image = bool(spec.fit_defaults.get("image", False))
    x = dspec.load("train", seed, data_dir, image=image)
    module = spec.build(tuple(x.shape[1:]), dspec.kind)
    return spec, module, x, dspec, image


def _objective(spec, module, kind):
    return spec.objective(module=module, data_kind=kind) if spec.objective is not None else None


def _programs(module):
    return module.model, getattr(module, "guide", None)


def load_run(run_dir):
    """Rebuild a trained module from a run folder."""
    run_dir = Path(run_dir)
    meta_path = run_dir / RUN_FILE
    if not meta_path.is_file():
        raise UsageError(f"--run: {str(run_dir)!r} has no {RUN_FILE}; train into it with `pyro-dgm train --out`")
    meta = json.loads(meta_path.read_text())
    spec, dspec = registry.get_model(meta["model"]), registry.get_data(meta["data"])
    module = spec.build(tuple(meta["event_shape"]), dspec.kind)
    module.load_state_dict(torch.load(run_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    module.eval()
    return meta, spec, dspec, module


def draw(module, n):
    """Samples from any registered module: its ``sample`` method, else site "x" of its program."""
    from .inference import sample_program

    if hasattr(module, "sample"):
        return module.sample(n)
    return sample_program(module.model, n)


def save_samples(x, path, kind):
    from . import plots

    if kind == "points":
        fig = plots.scatter_2d(x, path=path)
    else:
        fig = plots.sample_grid(x[:100], nrow=10, path=path)
    import matplotlib.pyplot as plt

    plt.close(fig)


# ------------------------------------------------------------------ commands

def cmd_list(args):
    registry._load_all()
    print("models:")
    for name, spec in sorted(registry.MODELS.items()):
        print(f"  {name:18s} {spec.family:15s} {'/'.join(spec.data_kinds):28s} {spec.description}")
    print("data:")
    for name, d in sorted(registry.DATA.items()):
        print(f"  {name:18s} {d.kind:11s} {d.description}")
    return 0


def cmd_train(args):
    from .fit import fit

    for name in ("epochs", "steps", "batch_size", "checkpoint_every"):
        _positive(name.replace("_", "-"), getattr(args, name))
    spec, module, x, dspec, image = build_run(args.model, args.data, args.data_dir, args.seed)
    out = Path(args.out or f"runs/{args.model}-{args.data}")
    kwargs = {k: v for k, v in spec.fit_defaults.items() if k != "image"}
    for key in ("epochs", "steps", "batch_size", "lr"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if args.steps is not None and args.epochs is None:
        kwargs.pop("epochs", None)
    model, guide = _programs(module)
    t0 = time.perf_counter()
    result = fit(model, guide, x, objective=_objective(spec, module, dspec.kind), device=args.device,
                 seed=args.seed, checkpoint=out / CKPT_FILE, checkpoint_every=args.checkpoint_every,
                 resume=args.resume, progress=False if args.no_progress else None, **kwargs)
    seconds = time.perf_counter() - t0
    torch.save(module.to("cpu").state_dict(), out / WEIGHTS_FILE)
    meta = {"model": args.model, "data": args.data, "data_dir": args.data_dir, "seed": args.seed,
            "event_shape": list(x.shape[1:]), "steps": result.steps, "epochs": result.epochs,
            "final_loss": result.loss, "train_seconds": round(seconds, 2)}
    (out / RUN_FILE).write_text(json.dumps(meta, indent=2))
    print(f"trained {args.model} on {args.data}: {result.steps} steps, {result.epochs} epochs, "
          f"final loss {result.loss:.4f}, {seconds:.1f} s")
    print(f"run folder: {out}  (checkpoint {out / CKPT_FILE}, weights {out / WEIGHTS_FILE})")
    return 0


def cmd_sample(args):
    _positive("num", args.num)
    meta, spec, dspec, module = load_run(args.run)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        x = draw(module, args.num)
    path = Path(args.out or Path(args.run) / "samples.png")
    save_samples(x, path, dspec.kind)
    torch.save(x, path.with_suffix(".pt"))
    print(f"{args.num} samples of {meta['model']}: {path} (tensor {path.with_suffix('.pt')})")
    return 0


# Data sets dequantized from discrete levels: their discrete bits/dim is what papers report.
NUM_LEVELS = {"digits-continuous": 17}


def cmd_evaluate(args):
    _positive("num-particles", args.num_particles)
    meta, spec, dspec, module = load_run(args.run)
    image = bool(spec.fit_defaults.get("image", False))
    x = dspec.load(args.split, meta["seed"], meta.get("data_dir"), image=image)
    where = f"{meta['model']} on {meta['data']} ({args.split}, {x.shape[0]} examples)"
    if spec.family == "gan":
        print(f"{where}: {_sample_quality(module, x, dspec.kind)} (a GAN has no likelihood)")
        return 0
    res, how = _likelihood(spec, dspec, module, x, args)
    if "bits_per_dim_discrete" in res:  # dequantized data: the number comparable with discrete models
        bits = f"{res['bits_per_dim_discrete']:.4f} bits/dim of the {NUM_LEVELS[dspec.name]}-level data"
    else:
        bits = f"{res['bits_per_dim']:.4f} bits/dim"
    print(f"{where}: NLL {res['nll']:.3f} ± {res['nll_stderr']:.3f} nats, {bits} ({how})")
    return 0


def _likelihood(spec, dspec, module, x, args):
    """(result dict, how it was computed) for every family that has a density."""
    from .evaluation import evaluate

    if spec.family == "score":
        from .inference import VESDE, probability_flow_nll
        from .inference.score_based import score_field_of

        field = score_field_of(module.model, x[:2])
        sde = field.sde
        if sde is None:  # a noise ladder: the VE SDE through the same range of sigmas
            sde = VESDE(float(field.sigmas.min()), float(field.sigmas.max()))
        res = probability_flow_nll(module.model, x, sde=sde, num_levels=NUM_LEVELS.get(dspec.name), seed=args.seed)
        return res, f"probability-flow ODE of {type(sde).__name__}"
    if spec.family == "ebm":
        if tuple(x.shape[1:]) != (2,):
            raise UsageError("evaluate: an EBM's log Z is integrated on a grid in 2-D only; in higher "
                             "dimensions estimate it with pyro_dgm.partition.ais_log_partition")
        from .partition import grid_log_partition

        log_z = grid_log_partition(module.energy, bounds=6.0, num_points=500)
        return evaluate(module.model, x, log_normalizer=log_z), f"log Z {log_z:.3f} on a 500x500 grid"
    guide = getattr(module, "guide", None)
    res = evaluate(module.model, x, guide=guide, num_particles=args.num_particles if guide else 1, seed=args.seed,
                   num_levels=NUM_LEVELS.get(dspec.name))
    return res, f"IWAE, K={res['num_particles']}" if guide else "exact"


def _sample_quality(module, x, kind):
    from . import metrics

    torch.manual_seed(0)
    with torch.no_grad():
        samples = draw(module, x.shape[0])
    if kind == "points":
        return f"MMD^2 {metrics.mmd2(samples, x):.4f} between {x.shape[0]} samples and the data"
    q = metrics.digits_quality(samples.reshape(x.shape[0], -1), x.reshape(x.shape[0], -1))
    return f"classifier Frechet distance {q['frechet']:.3f}, precision {q['precision']:.3f}, recall {q['recall']:.3f}"


def cmd_demo(args):
    from .demo import run_demo

    run_demo(Path(args.out), device=args.device, seed=args.seed, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
