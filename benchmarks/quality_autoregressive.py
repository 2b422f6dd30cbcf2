"""Autoregressive models vs the factorized Bernoulli baseline on binarized digits (or MNIST files).

Exact test NLL in nats per example and bits/dim for FVSBN, NADE, MADE (one
ordering, and an ensemble of 8 random orderings), PixelCNN, gated PixelCNN and
a GRU over the raster ordering, with the settings, the training time, and the
seconds to draw 1,000 samples. Every model trains with Adam for at most
``epochs`` epochs and stops early on the exact validation NLL (the weights of
the best epoch are kept). Reproduce with::

    python benchmarks/quality.py --family autoregressive
    python benchmarks/quality.py --family autoregressive --data mnist --data-dir DIR
"""

from __future__ import annotations

import copy
import math
import time

import torch

import pyro_dgm
from pyro_dgm.models import FactorizedBernoulli
from pyro_dgm.models.autoregressive import FVSBN, MADE, NADE, AutoregressiveRNN, GatedPixelCNN, PixelCNN
from pyro_dgm.registry import get_data

NUM_SAMPLES = 1000
PATIENCE = 8

#: name -> (class, constructor options, fit options, image data?)
SETTINGS = {
    "factorized Bernoulli": (FactorizedBernoulli, {}, {"lr": 5e-2, "epochs": 40, "batch_size": 128}, False),
    "FVSBN": (FVSBN, {}, {"lr": 1e-2, "epochs": 100, "batch_size": 64}, False),
    "NADE": (NADE, {"hidden": 100}, {"lr": 5e-3, "epochs": 150, "batch_size": 64}, False),
    "NADE, hidden 300": (NADE, {"hidden": 300}, {"lr": 5e-3, "epochs": 150, "batch_size": 64}, False),
    "NADE, hidden 500": (NADE, {"hidden": 500}, {"lr": 5e-3, "epochs": 150, "batch_size": 64}, False),
    "NADE, 8 orderings": (NADE, {"hidden": 300, "num_orderings": 8, "order": "random"},
                          {"lr": 5e-3, "epochs": 150, "batch_size": 64}, False),
    "NADE, 8 orderings, h 500": (NADE, {"hidden": 500, "num_orderings": 8, "order": "random"},
                                 {"lr": 5e-3, "epochs": 150, "batch_size": 64}, False),
    "MADE, 1 ordering": (MADE, {"hidden": (500,), "order": "natural"}, {"lr": 3e-3, "epochs": 100, "batch_size": 64},
                         False),
    "MADE, 1 random ordering": (MADE, {"hidden": (500,), "order": "random"},
                                {"lr": 3e-3, "epochs": 100, "batch_size": 64}, False),
    "MADE, 8 orderings": (MADE, {"hidden": (500,), "num_masks": 8, "order": "random"},
                          {"lr": 3e-3, "epochs": 150, "batch_size": 64}, False),
    # Chosen on validation (quality_ensemble.py's notes): 2 layers with dropout 0.3 beat 1 layer, more masks,
    # more layers, dropout 0.5 and weight decay.
    "MADE 8, 2x500, drop 0.3": (MADE, {"hidden": (500, 500), "num_masks": 8, "order": "random", "dropout": 0.3},
                               {"lr": 3e-3, "epochs": 300, "batch_size": 64}, False),
    "PixelCNN": (PixelCNN, {"hidden": 32, "num_layers": 4}, {"lr": 3e-3, "epochs": 50, "batch_size": 64}, True),
    "gated PixelCNN": (GatedPixelCNN, {"hidden": 24, "num_layers": 5},
                       {"lr": 3e-3, "epochs": 40, "batch_size": 64}, True),
    "RNN (GRU)": (AutoregressiveRNN, {"hidden": 64}, {"lr": 1e-2, "epochs": 80, "batch_size": 64}, False),
}


def _splits(args, image):
    spec = get_data(args.data)
    return tuple(spec.load(split, args.seed, args.data_dir, image=image) for split in ("train", "val", "test"))


class _KeepBest:
    """Stop after ``PATIENCE`` epochs without a better validation NLL, and keep the best weights.

    The validation NLL is the exact one of the eval-mode model (MADE: its
    ensemble). Unlike ``pyro_dgm.callbacks.EarlyStopping``, the best weights
    are also kept when the epoch budget runs out first (see :meth:`restore`).
    """

    def __init__(self, model, data):
        self.model, self.data = model, data
        self.best, self.best_state, self.bad_epochs, self.history = math.inf, None, 0, []

    def on_epoch_end(self, state):
        self.model.eval()
        value = pyro_dgm.evaluate(self.model.model, self.data)["nll"]
        self.model.train()
        self.history.append(value)
        if value < self.best:
            self.best, self.bad_epochs = value, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.bad_epochs += 1
            state.stop = self.bad_epochs >= PATIENCE

    def restore(self):
        self.model.load_state_dict(self.best_state)
        self.model.eval()


def fit_kept(cls, options, fit_options, data, seed, epochs_scale=1.0):
    """A model trained on ``data[0]`` with early stopping on ``data[1]``, its best weights loaded (eval
    mode); returns ``(model, train seconds, _KeepBest)``. ``seed`` seeds the initialisation and the
    batches (not the data split)."""
    x, xv = data[0], data[1]
    torch.manual_seed(seed)
    m = cls(tuple(x.shape[1:]), **options)
    epochs = max(1, int(fit_options["epochs"] * epochs_scale))
    keep = _KeepBest(m, xv)
    t0 = time.perf_counter()
    pyro_dgm.fit(m.model, None, x, epochs=epochs, lr=fit_options["lr"], batch_size=fit_options["batch_size"],
                 seed=seed, callbacks=[keep], progress=False)
    seconds = time.perf_counter() - t0
    keep.restore()
    return m, seconds, keep


def _train(cls, options, fit_options, data, args):
    m, seconds, keep = fit_kept(cls, options, fit_options, data, args.seed, getattr(args, "epochs_scale", 1.0))
    result = pyro_dgm.evaluate(m.model, data[2])
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    m.sample(NUM_SAMPLES)
    return result, seconds, time.perf_counter() - t0, len(keep.history), keep.best


def _describe(options, fit_options):
    opts = ", ".join(f"{k}={v}" for k, v in options.items())
    return f"{opts + '; ' if opts else ''}lr={fit_options['lr']}, batch={fit_options['batch_size']}"


def run(args):
    data = {image: _splits(args, image) for image in (False, True)}
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch's one-time lazy imports, kept out of the timings
    x = data[False][0]
    print(f"data: {args.data} ({x.shape[0]} train / {data[False][1].shape[0]} val / "
          f"{data[False][2].shape[0]} test, {x.shape[1]} dims); Adam, early stopping on val NLL "
          f"(patience {PATIENCE}); sampling: {NUM_SAMPLES} draws; torch threads: {torch.get_num_threads()}")
    print("(choose among variants by the val column: the best validation NLL, the weights that are kept)")
    print(f"{'model':24s} {'val NLL':>8s} {'NLL nats':>9s} {'± s.e.':>7s} {'bits/dim':>9s} {'epochs':>6s} "
          f"{'train s':>8s} {'sample s':>9s}  settings")
    for name, (cls, options, fit_options, image) in SETTINGS.items():
        if getattr(args, "only", None) and name not in args.only:
            continue
        res, train_s, sample_s, epochs, val = _train(cls, options, fit_options, data[image], args)
        print(f"{name:24s} {val:8.3f} {res['nll']:9.3f} {res['nll_stderr']:7.3f} {res['bits_per_dim']:9.4f} "
              f"{epochs:6d} {train_s:8.1f} {sample_s:9.2f}  {_describe(options, fit_options)}", flush=True)
