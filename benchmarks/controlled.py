"""Controlled generation and inpainting on the 8x8 digits (issue 16).

1. Class-conditional models, each trained by ``pyro_dgm.fit(m.model, m.guide, TensorDataset(x, y))``:
   the shipped digits classifier labels 100 samples per requested class; the
   table gives the fraction labelled as requested, and, where there is a
   density, the test NLL of log p(x | y), of the model's own marginal
   log (1/10) sum_y p(x | y), and of the same network trained without labels.
2. Inpainting of the test digits (binary) with the bottom half hidden and with a
   random 50% of pixels hidden: per-pixel accuracy of the completions (each
   draw, and the vote of 10 draws) and the NLL of the hidden pixels
   log p(x_u | x_k) where the model has one, against the factorized baseline.
   A figure of masked inputs, completions and truth goes to docs/img/inpainting.png.

Run ``python benchmarks/controlled.py`` (about 20 minutes on one core; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import pyro_dgm
from pyro_dgm.callbacks import EarlyStopping
from pyro_dgm.data import DIGITS_LEVELS, DynamicDequantized, load_digits, load_digits_labels
from pyro_dgm.inference import Adversarial, DenoisingScoreMatching
from pyro_dgm.inpaint import conditional_log_prob, inpaint, inpaint_method
from pyro_dgm.metrics import digits_classifier
from pyro_dgm.models import MADE, VAE
from pyro_dgm.models.conditional import (ConditionalFlow, ConditionalGAN, ConditionalGenerator, ConditionalMADE,
                                         ConditionalVAE, GuidedNCSN, ProjectionCritic, one_hot)
from pyro_dgm.programs import sample_program

# Epochs of the 1,257 training digits (batch 64 unless said): the most a density model may train; it stops early
# on the 180 validation digits (patience PATIENCE epochs) and keeps its best epoch.
EPOCHS = {"vae": 200, "made": 30, "made_agnostic": 200, "flow": 100, "gan": 60, "score": 150}
PATIENCE = {"vae": 6, "made": 4, "flow": 10}
INPAINT_EPOCHS = {"made": 30, "vae": 40}  # the unconditional MADE and VAE of the inpainting table
AGNOSTIC_MASKS = 8
# The conditional VAE's latent size, chosen on the validation IWAE bound (--select-latent prints the sweep).
VAE_LATENTS, VAE_LATENT = (4, 8, 16), 16
PER_CLASS = 100
DIGITS_LOG_LEVELS = 64 * math.log(17)  # dequantized data: discrete bits/dim = (nll + D log 17) / (D log 2)


def _fit(m, guide, data, epochs, seed, val=None, patience=4, monitor="nll", **kw):
    """fit on (x, y) batches; with ``val = (x_val, y_val)``, early stopping on the validation NLL (the IWAE bound
    with a guide) restores the best epoch."""
    t = time.perf_counter()
    callbacks = [EarlyStopping(val, patience=patience, monitor=monitor, num_particles=64)] if val is not None else []
    pyro_dgm.fit(m.model, guide, data, epochs=epochs, seed=seed, progress=False, callbacks=callbacks, **kw)
    return time.perf_counter() - t


def _accuracy(model):
    """Fraction of PER_CLASS samples per class that the shipped classifier labels as the requested class."""
    y = torch.arange(10).repeat_interleave(PER_CLASS)
    with torch.no_grad():
        samples = sample_program(model, len(y), args=(y,)).clamp(0, 1)
        return float((digits_classifier()(samples).argmax(-1) == y).float().mean())


@torch.no_grad()
def _log_p(m, x, y, k=64):
    """log p(x | y) per example: exact for MADE and the flow, the IWAE bound with k guide draws for the VAE."""
    if not isinstance(m, ConditionalVAE):
        return m.log_prob(x, y)
    xs, ys = x.repeat(k, 1), y.repeat(k)
    loc, raw = m.encoder(torch.cat([xs, one_hot(ys, 10)], -1))
    q = torch.distributions.Normal(loc, torch.nn.functional.softplus(raw) + 1e-3)
    z = q.sample()
    logw = (torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) + m.likelihood_dist(z, one_hot(ys, 10)).log_prob(xs)
            - q.log_prob(z).sum(-1))
    return torch.logsumexp(logw.view(k, -1), 0) - math.log(k)


def _nlls(m, xt, yt):
    """Test NLL of log p(x | y) and of the marginal -log (1/10) sum_c p(x | c), nats per example."""
    per_class = torch.stack([_log_p(m, xt, torch.full_like(yt, c)) for c in range(10)])
    cond = -per_class.gather(0, yt.unsqueeze(0)).mean()
    return float(cond), float(-(torch.logsumexp(per_class, 0) - math.log(10)).mean())


def _cvae(latent_dim):
    """The label in every decoder layer, two hidden layers each way."""
    return ConditionalVAE(64, latent_dim=latent_dim, hidden=(256, 256), label_every_layer=True)


# The conditional MAF's depth, chosen on the validation NLL (--select-flow prints the sweep).
FLOW_LAYERS, FLOW_DEPTHS = 12, (5, 8, 12)


def _cflow(num_layers=FLOW_LAYERS):
    return ConditionalFlow(64, num_layers=num_layers, hidden=(256, 256), transform="autoregressive")


# Trained on freshly dequantized digits, the learning rate decayed by 0.93 per epoch.
FLOW_FIT = {"lr": 1e-3, "batch_size": 64, "scheduler": lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, 0.93)}


def _sweep(args, name, values, make, train, val, family, **fit_kw):
    """The best validation NLL (the IWAE bound, k=64, with a guide) of ``make(v)`` for each setting ``v``."""
    print(f"\n{name:>6s} {'val NLL':>8s} {'epochs':>6s}")
    for value in values:
        torch.manual_seed(args.seed)
        m = make(value)
        stop = EarlyStopping(val, patience=PATIENCE[family], monitor="nll", num_particles=64)
        pyro_dgm.fit(m.model, getattr(m, "guide", None), train, epochs=EPOCHS[family], seed=args.seed,
                     progress=False, callbacks=[stop], **fit_kw)
        print(f"{value:6d} {stop.best:8.2f} {len(stop.history):6d}")


def select_flow_depth(args):
    """The conditional MAF's validation NLL per number of layers: FLOW_LAYERS is the best of these."""
    train = DynamicDequantized(load_digits("train", "levels"), DIGITS_LEVELS, load_digits_labels("train"))
    val = (load_digits("val", "continuous"), load_digits_labels("val"))
    _sweep(args, "layers", FLOW_DEPTHS, _cflow, train, val, "flow", **FLOW_FIT)


def select_vae_latent(args):
    """The conditional VAE's validation IWAE bound (k=64) per latent size: VAE_LATENT is the best of these."""
    train = TensorDataset(load_digits("train", "binary"), load_digits_labels("train"))
    val = (load_digits("val", "binary"), load_digits_labels("val"))
    _sweep(args, "latent", VAE_LATENTS, _cvae, train, val, "vae", lr=1e-3, batch_size=64)


def conditional_table(args):
    xb, xc, y = load_digits("train", "binary"), load_digits("train", "continuous"), load_digits_labels("train")
    xbt, xct, yt = load_digits("test", "binary"), load_digits("test", "continuous"), load_digits_labels("test")
    scale = 0.05 if args.quick else 1.0
    ep = {k: max(1, int(v * scale)) for k, v in EPOCHS.items()}
    zeros, zeros_t = torch.zeros_like(y), torch.zeros_like(yt)
    with torch.no_grad():
        ceiling = {kind: float((digits_classifier()(x).argmax(-1) == yt).float().mean())
                   for kind, x in (("binary", xbt), ("continuous", xct))}
    print(f"classifier on real test digits: binary {ceiling['binary']:.3f}, continuous {ceiling['continuous']:.3f}")
    rows = []

    yv = load_digits_labels("val")
    val = {"binary": load_digits("val", "binary"), "continuous": load_digits("val", "continuous")}

    def density_row(name, make, data, xt, guide_of, kind, fit_kw, family):
        torch.manual_seed(args.seed)
        m = make()
        secs = _fit(m, guide_of(m), data(y), ep[family], args.seed, val=(val[kind], yv), patience=PATIENCE[family],
                    **fit_kw)
        m.eval()
        acc = _accuracy(m.model)
        cond, marg = _nlls(m, xt, yt)
        torch.manual_seed(args.seed)
        u = make()  # the same network, trained with one label for all: the unconditional model
        _fit(u, guide_of(u), data(zeros), ep[family], args.seed, val=(val[kind], torch.zeros_like(yv)),
             patience=PATIENCE[family], **fit_kw)
        u.eval()
        uncond = float(-_log_p(u, xt, zeros_t).mean())
        rows.append((name, kind, acc, cond, marg, uncond, secs))
        if isinstance(m, ConditionalFlow):  # reduced-temperature draws, as Glow shows its samples
            labels = torch.arange(10).repeat_interleave(PER_CLASS)
            for t in (0.7, 0.5):
                with torch.no_grad():
                    hit = digits_classifier()(m.sample(labels, temperature=t).clamp(0, 1)).argmax(-1) == labels
                rows.append((f"  same, temperature {t}", kind, float(hit.float().mean()), None, None, None, 0.0))
        if isinstance(m, ConditionalVAE):  # the decoder's mean images, as VAE samples are usually shown
            labels = torch.arange(10).repeat_interleave(PER_CLASS)
            with torch.no_grad():
                hit = digits_classifier()(m.sample(labels, mean=True)).argmax(-1) == labels
            rows.append(("  same, decoder means E[x | z, y]", kind, float(hit.float().mean()), None, None, None, 0.0))

    vae_guide = lambda m: m.guide  # noqa: E731
    no_guide = lambda m: None  # noqa: E731
    binary = lambda labels: TensorDataset(xb, labels)  # noqa: E731
    levels = load_digits("train", "levels")
    fresh = lambda labels: DynamicDequantized(levels, DIGITS_LEVELS, labels)  # noqa: E731
    density_row(f"conditional VAE (IWAE k=64), latent {VAE_LATENT}", lambda: _cvae(VAE_LATENT), binary, xbt,
                vae_guide, "binary", {"lr": 1e-3, "batch_size": 64}, "vae")
    density_row("conditional MADE", lambda: ConditionalMADE(64, hidden=(500,)), binary, xbt, no_guide, "binary",
                {"lr": 3e-3, "batch_size": 64}, "made")
    density_row(f"conditional flow (MAF, {FLOW_LAYERS} layers)", _cflow, fresh, xct, no_guide, "continuous", FLOW_FIT,
                "flow")

    torch.manual_seed(args.seed)
    gan = ConditionalGAN(ConditionalGenerator(64, latent_dim=16, hidden=(256, 256)), ProjectionCritic(64))
    betas = {"generator": {"betas": (0.5, 0.999)}, "critic": {"betas": (0.5, 0.999)}}
    secs = _fit(gan, None, TensorDataset(xc, y), ep["gan"], args.seed, objective=Adversarial(gan.critic, loss="hinge"),
                lr={"generator": 2e-4, "critic": 2e-4}, optimizer_kwargs=betas, batch_size=64)
    rows.append(("conditional GAN (projection critic)", "continuous", _accuracy(gan.model), None, None,
                 None, secs))

    torch.manual_seed(args.seed)
    score = GuidedNCSN(64, guidance=args.guidance)
    secs = _fit(score, None, TensorDataset(xc, y), ep["score"], args.seed, objective=DenoisingScoreMatching(), lr=1e-3,
                batch_size=128)
    score.eval()
    rows.append((f"score model, classifier-free guidance w={args.guidance:g}", "continuous",
                 _accuracy(score.model), None, None, None, secs))

    print(f"\n{'model':42s} {'data':10s} {'class acc':>9s} {'NLL x|y':>9s} {'NLL marg':>9s} {'NLL uncond':>10s}"
          f" {'train s':>8s}")
    for name, kind, acc, cond, marg, uncond, secs in rows:
        fmt = lambda v: f"{v:9.2f}" if v is not None else f"{'-':>9s}"  # noqa: E731
        print(f"{name:42s} {kind:10s} {acc:9.3f} {fmt(cond)} {fmt(marg)} {fmt(uncond):>10s} {secs:8.1f}")
    print("NLL in nats per test digit; flow: dequantized [0,1)^64 density (discrete = NLL + 64 log 17 =",
          f"NLL + {DIGITS_LOG_LEVELS:.1f}). 'uncond': the same network trained with one label for all.",
          "Density models stop early on the validation digits unless said.")


# ---------------------------------------------------------------- inpainting

def _masks(n, seed):
    bottom = torch.zeros(n, 64, dtype=torch.bool)
    bottom[:, :32] = True
    g = torch.Generator().manual_seed(seed)
    random = torch.rand(n, 64, generator=g) < 0.5
    return {"bottom half hidden": bottom, "random 50% hidden": random}


def inpainting_table(args):
    x, xt = load_digits("train", "binary"), load_digits("test", "binary")
    if args.quick:
        xt = xt[:40]
    scale = 0.05 if args.quick else 1.0
    torch.manual_seed(args.seed)
    made = MADE(64, hidden=(500,))
    pyro_dgm.fit(made.model, None, x, epochs=max(1, int(INPAINT_EPOCHS["made"] * scale)), lr=3e-3, batch_size=64,
                 seed=args.seed, progress=False)
    torch.manual_seed(args.seed)
    # A new ordering and connectivity per step; early-stopped on the validation NLL of its 8-ordering ensemble.
    agnostic = MADE(64, hidden=(500,), num_masks=AGNOSTIC_MASKS, order="agnostic")
    stop = EarlyStopping(load_digits("val", "binary"), patience=10, monitor="nll")
    t = time.perf_counter()
    pyro_dgm.fit(agnostic.model, None, x, epochs=max(1, int(EPOCHS["made_agnostic"] * scale)), lr=3e-3,
                 batch_size=64, seed=args.seed, progress=False, callbacks=[stop])
    agnostic_secs, agnostic_epochs = time.perf_counter() - t, len(stop.history)
    torch.manual_seed(args.seed)
    vae = VAE(64, latent_dim=8, hidden=(256,))
    pyro_dgm.fit(vae.model, vae.guide, x, epochs=max(1, int(INPAINT_EPOCHS["vae"] * scale)), lr=1e-3, batch_size=64,
                 seed=args.seed, progress=False)
    made.eval(), agnostic.eval(), vae.eval()
    with torch.no_grad():
        print(f"\ntest NLL (nats): MADE raster order {float(-made.log_prob(xt).mean()):.2f}; MADE order-agnostic "
              f"(ensemble of {AGNOSTIC_MASKS}) {float(-agnostic.log_prob(xt).mean()):.2f}, trained "
              f"{agnostic_epochs} epochs in {agnostic_secs:.0f} s")
    p = x.mean(0).clamp(1e-3, 1 - 1e-3)
    s = 10
    shown = {}
    print(f"\n{'mask':20s} {'model':28s} {'route':10s} {'acc/draw':>9s} {'acc/vote':>9s} {'NLL hidden':>10s}"
          f" {'secs':>6s}")
    for mask_name, mask in _masks(len(xt), args.seed).items():
        hidden = ~mask
        base_draws = torch.bernoulli(p.expand(s, *xt.shape))
        nll_base = -(torch.distributions.Bernoulli(p).log_prob(xt) * hidden).sum(-1).mean()
        results = [("factorized baseline", "-", torch.where(mask, xt, base_draws), float(nll_base), 0.0)]
        for name, model, guide in (("MADE (raster order)", made.model, None),
                                   ("MADE (order-agnostic)", agnostic.model, None),
                                   ("VAE (guide + resampling)", vae.model, vae.guide)):
            t = time.perf_counter()
            draws = inpaint(model, xt, mask, num_samples=s, guide=guide, num_steps=10, seed=args.seed)
            secs = time.perf_counter() - t
            try:
                nll = float(-conditional_log_prob(model, xt, mask, guide=guide, num_particles=256).mean())
            except ValueError:  # Gibbs route: no exact conditional density
                nll = None
            results.append((name, inpaint_method(model, xt, mask, guide=guide), draws, nll, secs))
        for name, route, draws, nll, secs in results:
            per_draw = float(((draws == xt) | mask).float().sub(mask.float()).sum() / (hidden.sum() * s))
            vote = (draws.mean(0) > 0.5).float()
            per_vote = float(((vote == xt) & hidden).sum() / hidden.sum())
            shown_nll = f"{nll:10.2f}" if nll is not None else f"{'-':>10s}"
            print(f"{mask_name:20s} {name:28s} {route:10s} {per_draw:9.3f} {per_vote:9.3f} {shown_nll} {secs:6.1f}")
            shown[(mask_name, name)] = draws
    print("accuracy over hidden pixels; NLL hidden = -log p(x_u | x_k) in nats per digit (exact for MADE with the "
          "known pixels first, importance-weighted with 256 guide particles for the VAE). The raster MADE completes "
          "the bottom half exactly (ancestral) and the random mask by 10 Gibbs sweeps of its exact density; the "
          "order-agnostic MADE completes both exactly, each ordering of its ensemble with the row's known pixels "
          "moved first (MADE.walk: one step per pixel, all rows in shared matrix products).")
    _figure(xt, _masks(len(xt), args.seed), shown, Path(args.figure))


def _figure(xt, masks, shown, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 8
    models = {"MADE (raster order)": "MADE", "MADE (order-agnostic)": "MADE o-a", "VAE (guide + resampling)": "VAE"}
    per_mask = 2 + 2 * len(models)
    fig, axes = plt.subplots(len(masks) * per_mask, cols, figsize=(cols * 0.9, len(masks) * per_mask * 0.95))
    r = 0
    for mask_name, mask in masks.items():
        rows = [("masked", torch.where(mask, xt, 0.5))]
        for name, short in models.items():
            rows += [(f"{short} #{i + 1}", shown[(mask_name, name)][i]) for i in range(2)]
        rows.append(("truth", xt))
        for label, images in rows:
            for c in range(cols):
                ax = axes[r, c]
                ax.imshow(images[c].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
            axes[r, 0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
            r += 1
        axes[r - len(rows), 0].set_title(mask_name, fontsize=7, loc="left")
    fig.tight_layout(pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="a few epochs, 40 test digits (a smoke run)")
    parser.add_argument("--only", choices=("conditional", "inpainting"), default=None)
    parser.add_argument("--figure", default="docs/img/inpainting.png")
    parser.add_argument("--select-latent", action="store_true", help="print the conditional VAE's validation bound "
                        "per latent size (how VAE_LATENT was chosen) and stop")
    parser.add_argument("--select-flow", action="store_true", help="print the conditional MAF's validation NLL "
                        "per depth (how FLOW_LAYERS was chosen) and stop")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.select_latent:
        return select_vae_latent(args)
    if args.select_flow:
        return select_flow_depth(args)
    if args.only != "inpainting":
        conditional_table(args)
    if args.only != "conditional":
        inpainting_table(args)


if __name__ == "__main__":
    main()
