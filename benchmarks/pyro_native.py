"""Programs written as Pyro's tutorials write them, each through pyro_dgm's entry points: one table.

The programs are the ones ``tests/test_pyro_native.py`` defines (imported from
there, so the table and the tests cannot drift apart). Each row trains with
``pyro_dgm.fit`` (or Pyro's SVI) and prints what came out.

    python benchmarks/pyro_native.py
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.infer import SVI, Trace_ELBO, autoguide
from torch import nn
from torch.utils.data import TensorDataset

import pyro_dgm
from pyro_dgm.data import load_digits
from pyro_dgm.models import MADE, VAE, MLPCritic
from pyro_dgm.inference import Adversarial
from pyro_dgm.programs import sample_program

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_pyro_native as T_  # noqa: E402


def row(kind, fn):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    t = time.perf_counter()
    try:
        out = fn()
    except Exception as err:  # the table reports a failure instead of stopping
        out = f"FAILED: {type(err).__name__}: {err}"[:120]
    print(f"{kind:<44} {out}  ({time.perf_counter() - t:.1f} s)", flush=True)


def tutorial_vae(x, x_test):
    vae = T_.TutorialVAE()
    r = pyro_dgm.fit(vae.model, vae.guide, x, epochs=30, batch_size=64, seed=0, progress=False)
    nll = pyro_dgm.evaluate(vae.model, x_test, guide=vae.guide, num_particles=100)["nll"]
    return f"site={r.objective.site!r}, test IWAE-100 NLL {nll:.2f} nats"


def flow_function():
    x = T_._moons()
    ts = [T.affine_coupling(2, hidden_dims=[32]), T.permute(2, torch.tensor([1, 0])),
          T.affine_coupling(2, hidden_dims=[32])]
    flow = dist.TransformedDistribution(dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1), ts)

    def model(data=None):
        pyro.module("flow", nn.ModuleList([t for t in ts if isinstance(t, nn.Module)]))
        with pyro.plate("data", len(data)):
            pyro.sample("x", flow, obs=data)

    before = pyro_dgm.evaluate(model, x)["nll"]
    pyro_dgm.fit(model, None, x, epochs=30, batch_size=128, lr=1e-2, seed=0, progress=False)
    return f"NLL {before:.3f} -> {pyro_dgm.evaluate(model, x)['nll']:.3f}; samples {tuple(sample_program(model, 5, like=x).shape)}"


def flow_module():
    x = T_._moons()
    f = T_.PyroFlow()
    before = pyro_dgm.evaluate(f.model, x)["nll"]
    r = pyro_dgm.fit(f.model, None, x, epochs=30, batch_size=128, lr=3e-3, seed=0, progress=False)
    return f"site={r.objective.site!r}, NLL {before:.3f} -> {pyro_dgm.evaluate(f.model, x)['nll']:.3f}"


def iaf_vae(x, x_test):
    model, guide, _ = T_.iaf_vae()
    r = pyro_dgm.fit(model, guide, x, epochs=30, batch_size=64, seed=0, progress=False)
    nll = pyro_dgm.evaluate(model, x_test, guide=guide, num_particles=100)["nll"]
    n = sum(p.numel() for m in r.modules for p in m.parameters())
    return f"{n} parameters found via pyro.module, test IWAE-100 NLL {nll:.2f}"


def hierarchical():
    x, g = T_.hierarchical_data()
    model = T_.hierarchical_model
    guide = autoguide.AutoNormal(model)
    pyro_dgm.fit(model, guide, TensorDataset(x, g), epochs=20, batch_size=40, lr=0.05, seed=0, progress=False)
    post = pyro.infer.Predictive(model, guide=guide, num_samples=400, return_sites=["theta"])(x, g)["theta"]
    means = [f"{v:.2f}" for v in post.mean(0).squeeze().tolist()]
    stds = [f"{v:.3f}" for v in post.std(0).squeeze().tolist()]
    truth = [f"{x[g == k].mean():.2f}" for k in range(T_.GROUPS)]
    return f"theta {means} (group means {truth}), std {stds} (exact about 0.100)"


def plain_gan():
    x = torch.randn(512, 2) * 0.3 + torch.tensor([2.0, -1.0])
    generator = T_.plain_generator()
    before = sample_program(generator, 500, like=x).mean(0)
    pyro_dgm.fit(generator, None, x, objective=Adversarial(MLPCritic(2, hidden=(32,))), epochs=40, batch_size=64,
                 lr=2e-3, seed=0, progress=False)
    after = sample_program(generator, 500, like=x).mean(0)
    return f"sample mean {before.numpy().round(2)} -> {after.numpy().round(2)} (data {x.mean(0).numpy().round(2)})"


def svi_on_library_vae(x):
    vae = VAE(64, latent_dim=4, hidden=(32,))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    losses = [svi.step(x) / len(x) for _ in range(200)]
    return f"SVI ELBO loss {losses[0]:.2f} -> {losses[-1]:.2f} nats/example"


def coin():
    data = torch.cat([torch.ones(60), torch.zeros(40)])
    pyro_dgm.fit(T_.coin_model, T_.coin_guide, data, epochs=300, batch_size=10, lr=0.05, seed=0, progress=False)
    a, b = pyro.param("alpha_q").item(), pyro.param("beta_q").item()
    return (f"Beta({a:.1f}, {b:.1f}): mean {a / (a + b):.4f} (exact 0.5833), std "
            f"{math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))):.4f} (exact 0.0448)")


def gaussian_mean():
    x = 1.5 + torch.randn(1000)
    guide = autoguide.AutoNormal(T_.gaussian_mean_model)
    elbo = pyro.infer.Trace_ELBO(num_particles=32, vectorize_particles=True, max_plate_nesting=1)
    pyro_dgm.fit(T_.gaussian_mean_model, guide, x, objective=elbo, epochs=10, batch_size=10, lr=0.05, seed=0,
                 progress=False, scheduler=lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [4, 7], 0.3))
    exact = math.sqrt(1 / (1 / 100 + 1000))
    return f"posterior std {guide.scales.mu.item():.4f} vs exact {exact:.4f} (ratio {guide.scales.mu.item() / exact:.3f})"


def pyro_objects(x):
    vae = T_.TutorialVAE()
    r = pyro_dgm.fit(vae.model, vae.guide, x, objective=pyro.infer.TraceGraph_ELBO(), epochs=10, batch_size=64,
                     optimizer=pyro.optim.ClippedAdam({"lr": 1e-3, "clip_norm": 10.0}), progress=False)
    return (f"{r.objective!r} with {type(r.optimizers['model']).__name__}: loss "
            f"{r.losses['model'][0]:.2f} -> {r.losses['model'][-1]:.2f}")


def compare_families(x, x_test):
    vae = VAE(64, latent_dim=8, hidden=(128,))
    pyro_dgm.fit(vae.model, vae.guide, x, epochs=40, batch_size=64, seed=0, progress=False)
    made = MADE(64, hidden=(256,))
    pyro_dgm.fit(made.model, None, x, epochs=40, batch_size=64, lr=3e-3, seed=0, progress=False)
    table = pyro_dgm.compare({"vae": (vae.model, vae.guide), "made": made.model}, x_test, num_particles=100)
    nll_vae = pyro_dgm.evaluate(vae.model, x_test, guide=vae.guide, num_particles=100)["nll"]
    nll_made = pyro_dgm.evaluate(made.model, x_test)["nll"]
    cols = [c for c in ("elpd", "elpd_loo", "se", "dse", "weight") if c in table.columns]
    return (f"\n{table[cols].round(2).to_string()}\n{'':44} evaluate: vae {nll_vae:.2f}, made {nll_made:.2f} nats")


def mixture():
    """Pyro's GMM tutorial: TraceEnum_ELBO in training, the assignment summed out in evaluate too."""
    from pyro import poutine

    torch.manual_seed(0)
    data = torch.cat([torch.randn(100) * 0.8, 6 + torch.randn(100) * 0.8])
    names = ["weights", "scale", "locs"]
    guide = autoguide.AutoDelta(poutine.block(T_._mixture, expose=names),
                                init_loc_fn=lambda site: {"locs": torch.tensor([1.0, 5.0])}.get(
                                    site["name"], autoguide.initialization.init_to_sample(site)))
    pyro_dgm.fit(T_._mixture, guide, data, objective=pyro.infer.TraceEnum_ELBO(max_plate_nesting=1), epochs=300,
                 batch_size=200, lr=0.05, seed=0, progress=False)
    fitted = guide.median(data)
    density = dist.Normal(fitted["locs"], fitted["scale"]).log_prob(data[:, None]) + fitted["weights"].log()
    exact = -torch.logsumexp(density, -1).mean().item()
    nll = pyro_dgm.evaluate(T_._mixture, data, guide=guide)["nll"]
    locs = ", ".join(f"{v:.2f}" for v in fitted["locs"].sort().values.tolist())
    return f"locs {locs} (true 0, 6), evaluate NLL {nll:.4f} vs the fitted mixture's {exact:.4f}"


def regression():
    """A logistic regression model(x, y) with obs=y: fit, then ArviZ's PSIS-LOO on to_arviz."""
    import arviz as az

    torch.manual_seed(0)
    x = torch.randn(200)
    y = torch.bernoulli(torch.sigmoid(2 * x))
    guide = autoguide.AutoNormal(T_._logistic_regression)
    pyro_dgm.fit(T_._logistic_regression, guide, (x, y), epochs=30, batch_size=50, lr=0.05, seed=0,
                 progress=False)
    loo = az.loo(pyro_dgm.to_arviz(T_._logistic_regression, guide, (x, y), num_samples=200, seed=0))
    w = pyro.param("AutoNormal.locs.w").item()
    return f"w {w:.2f} (true 2), PSIS-LOO elpd {float(loo['elpd_loo']):.2f} (se {float(loo['se']):.2f})"


def renyi_iwae():
    """RenyiELBO(alpha=0, K) is the IWAE bound: fit's loss is it, per example."""
    x = torch.randn(100) * 2 ** 0.5

    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(pyro.sample("z", dist.Normal(0.0, 1.0)), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(pyro.param("a", torch.tensor(0.0)) * x, 1.0))

    r = pyro_dgm.fit(model, guide, x, objective=pyro.infer.RenyiELBO(alpha=0.0, num_particles=300), steps=1,
                     lr=1e-9, batch_size=100, progress=False)
    exact = -dist.Normal(0.0, 2 ** 0.5).log_prob(x).mean().item()
    elbo = pyro.infer.Trace_ELBO(num_particles=300).loss(model, guide, x) / len(x)
    return f"loss {r.losses['model'][0]:.3f} vs the exact NLL {exact:.3f} (the negative ELBO: {elbo:.3f})"


def main():
    torch.set_num_threads(1)
    x, x_test = load_digits("train"), load_digits("test")
    row("tutorial VAE (model(x), site 'obs', pyro.module)", lambda: tutorial_vae(x, x_test))
    row("Pyro-transform flow, plain function", flow_function)
    row("Pyro-transform flow, nn.Module", flow_module)
    row("VAE with a Pyro IAF guide", lambda: iaf_vae(x, x_test))
    row("hierarchical model, AutoNormal, (x, g) batches", hierarchical)
    row("plain-function GAN generator", plain_gan)
    row("SVI on pyro_dgm's VAE", lambda: svi_on_library_vae(x[:256]))
    row("coin example ('obs', pyro.param), batch 10", coin)
    row("Gaussian mean, N=1000, batch 10", gaussian_mean)
    row("Pyro ELBO and optim objects", lambda: pyro_objects(x))
    row("Gaussian mixture, config_enumerate", mixture)
    row("logistic regression model(x, y), obs=y", regression)
    row("RenyiELBO(alpha=0): the IWAE bound", renyi_iwae)
    row("pyro_dgm.compare: VAE vs MADE", lambda: compare_families(x, x_test))


if __name__ == "__main__":
    main()
