"""The runs tests/test_distributed.py checks, each a plain ``pyro_dgm.fit`` call.

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py OUT MODE``
(or :func:`main` in processes that have torchrun's environment variables)
runs them on two gloo ranks and writes each rank's losses, weights and NLLs
to ``OUT/<run>.rank<r>.pt``; the test runs the same functions in one process.
MODE "killed" trains the resumable VAE and kills rank 1 at step 5; "compare"
trains the VAE, the GAN and a param-store program, trains the resumable VAE
without a break and resumes the killed run, evaluates it (evaluate, the
probability flow, held-out values, compare), stops a VAE early (on the
loss, and on the IWAE NLL its ranks share), checkpoints an EBM's PCD replay buffers, then stops a VAE by a SIGTERM to
rank 1 and by rank 1's step hook alone; "glow" trains a Glow (ActNorm)
and evaluates it.

So that 2 ranks at batch B/2 can equal 1 process at batch B to float
precision, the VAE's and the GAN's noise comes with each example (a batch
item): each rank draws its own noise stream, which no single process can
reproduce row by row.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pyro_dgm
from pyro_dgm import evaluation
from pyro_dgm.arviz import held_out_log_likelihood
from pyro_dgm.callbacks import EarlyStopping
from pyro_dgm.inference import VPSDE, Adversarial, PersistentContrastiveDivergence, score_based
from pyro_dgm.models import EBM, NCSN, VAE, EnergyMLP, FactorizedBernoulli, Glow

D, Z, N = 6, 2, 64


class NoiseVAE(nn.Module):
    """A VAE as a plain Pyro program whose reparametrisation noise ``eps`` is a batch item:
    z = loc + scale * eps, scored by q(z|x) through a Delta's ``log_density`` (the usual ELBO)."""

    def __init__(self):
        super().__init__()
        self.encoder, self.decoder = nn.Linear(D, 2 * Z), nn.Linear(Z, D)

    def model(self, x, eps):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(Z), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x, eps):
        loc, log_scale = self.encoder(x).chunk(2, -1)
        q = dist.Normal(loc, log_scale.exp()).to_event(1)
        z = loc + log_scale.exp() * eps
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(z, log_density=q.log_prob(z), event_dim=1))


class CodeGenerator(nn.Module):
    """A GAN generator as a plain Pyro program whose codes ``z`` are a batch item."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(Z, 16), nn.Tanh(), nn.Linear(16, 2))

    def model(self, x, z):
        with pyro.plate("data", z.shape[0]):
            pyro.sample("x", dist.Delta(self.net(z), event_dim=1), obs=x)


def gaussian_mean(x):
    """Pyro's param store: a mean fitted by maximum likelihood."""
    loc = pyro.param("ddp_loc", torch.zeros(2))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def _data():
    g = torch.Generator().manual_seed(1)
    return {
        "vae": torch.utils.data.TensorDataset(torch.bernoulli(torch.full((N, D), 0.3), generator=g),
                                              torch.randn(N, Z, generator=g)),
        "glow": 0.1 + 0.8 * torch.rand(N, 1, 4, 4, generator=g),
        "gan": torch.utils.data.TensorDataset(torch.randn(N, 2, generator=g) + 2, torch.randn(N, Z, generator=g)),
        "param": torch.randn(N, 2, generator=g) + 3,
        "library_vae": torch.bernoulli(torch.full((N - 4, D), 0.4), generator=g),  # 60 rows: a short last batch
    }


def train(name, batch_size, **kwargs):
    """``(fit result, model, guide, data)`` of run ``name`` at ``batch_size`` (per process)."""
    torch.manual_seed(0)
    data = _data()[name.removesuffix("_loader")]
    common = dict(steps=8, batch_size=batch_size, seed=0, progress=False, lr=1e-2)
    if name == "vae":
        m = NoiseVAE()
        return pyro_dgm.fit(m.model, m.guide, data, **common), m.model, m.guide, data
    if name == "glow":
        # SGD: ActNorm centres the first batch, so its bias gradient is 0 up to rounding (1e-7), which
        # Adam's first step, lr * sign(g), would turn into lr-sized steps that differ between runs.
        m = Glow((1, 4, 4), levels=1, steps=2, hidden=8)
        return pyro_dgm.fit(m.model, None, data, optimizer="sgd", **common), m.model, None, data
    if name == "gan":
        g, critic = CodeGenerator(), nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
        return (pyro_dgm.fit(g.model, None, data, objective=Adversarial(critic, loss="ns"), **common),
                g.model, None, data)
    if name in ("param", "param_loader"):
        pyro.clear_param_store()
        if name == "param_loader":  # a DataLoader, rebuilt by fit to draw each rank's shard
            data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=batch_size,
                                               shuffle=True)
        return pyro_dgm.fit(gaussian_mean, None, data, **common), gaussian_mean, None, data
    m = VAE(D, latent_dim=Z, hidden=(8,))
    common.update(steps=10, shuffle=True)
    return pyro_dgm.fit(m.model, m.guide, data, **{**common, **kwargs}), m.model, m.guide, data


def weights(result):
    return [t.detach().clone() for m in result.modules for t in m.state_dict().values()]


def _save(out, name, rank, result, **extra):
    torch.save({"losses": result.losses, "weights": weights(result), **extra}, out / f"{name}.rank{rank}.pt")


def main(out, mode):
    rank = int(os.environ["RANK"])
    if mode == "killed":
        def kill_rank_1(state):
            if rank == 1 and state.step == 5:
                os.kill(os.getpid(), signal.SIGKILL)
        train("library_vae", 4, checkpoint=out / "killed.pt", checkpoint_every=3, callbacks=[kill_rank_1])
        return
    if mode == "glow":
        result, model, _, data = train("glow", 8)
        _save(out, "glow", rank, result, nll=pyro_dgm.evaluate(model, data)["nll"])
        return
    for name in ("vae", "gan", "param", "param_loader"):
        _save(out, name, rank, train(name, 8)[0])
    full, model, guide, data = train("library_vae", 4, checkpoint=out / "full.pt", checkpoint_every=3)
    _save(out, "full", rank, full, **_evaluated(model, guide, data, rank))
    torch.save(_probability_flow(rank), out / f"flow_nll.rank{rank}.pt")
    resumed = train("library_vae", 4, checkpoint=out / "killed.pt", checkpoint_every=3, resume=True)[0]
    _save(out, "resumed", rank, resumed)
    stop = EarlyStopping(_data()["library_vae"][:16], patience=1)
    early = train("library_vae", 16, steps=None, epochs=8, lr=0.2, callbacks=[stop])[0]
    _save(out, "early", rank, early, history=stop.history)
    by_nll = EarlyStopping(_data()["library_vae"][:32], patience=8, monitor="nll", num_particles=4, batch_size=8)
    own, value = [], by_nll.value  # each rank's own value, before fit gives every rank rank 0's history
    by_nll.value = lambda state: own.append(value(state)) or own[-1]
    with _rows_scored(evaluation, "pointwise_log_likelihood") as rows:  # each epoch, every rank scores its half
        train("library_vae", 16, steps=None, epochs=3, callbacks=[by_nll])
    torch.save({"history": by_nll.history, "own": own, "rows": rows}, out / f"early_nll.rank{rank}.pt")
    torch.manual_seed(0)
    ebm = EBM(EnergyMLP(2, hidden=(16,)), (2,))
    pyro_dgm.fit(ebm.model, None, _data()["param"], objective=PersistentContrastiveDivergence(num_steps=2, buffer_size=32),
                 steps=3, batch_size=8, seed=0, progress=False, checkpoint=out / "pcd.pt")
    _signalled(out, rank)
    _stopped_by_one_rank(out, rank)  # last: were the ranks to disagree, rank 1 would leave the group here


@contextlib.contextmanager
def _rows_scored(module, name):
    """The batch sizes that ``module.name(first, x, ...)`` scores inside the block, in a list."""
    scored, plain = [], getattr(module, name)

    def counted(first, x, *args, **kwargs):
        scored.append(x.shape[0])
        return plain(first, x, *args, **kwargs)

    setattr(module, name, counted)
    try:
        yield scored
    finally:
        setattr(module, name, plain)


def _evaluated(model, guide, data, rank):
    """The VAE's IWAE NLL in batches of 16 (4 batches of the 60 rows), with the rows each rank scored;
    without a seed, after each rank has drawn a stream of its own; the per-example values and ArviZ's
    comparison table; of a DistributedSampler's loader; and on rank 0 alone."""
    with _rows_scored(evaluation, "pointwise_log_likelihood") as rows:
        nll = pyro_dgm.evaluate(model, data, guide, num_particles=4, batch_size=16, seed=0, all_ranks=True)["nll"]
    torch.manual_seed(rank)
    unseeded = pyro_dgm.evaluate(model, data, guide, num_particles=4, batch_size=16, all_ranks=True)["nll"]
    after = torch.rand(3)  # each rank's stream goes on as if evaluate had not run
    loader = torch.utils.data.DataLoader(data, batch_size=16, sampler=torch.utils.data.DistributedSampler(
        data, shuffle=False))
    presharded = pyro_dgm.evaluate(model, loader, guide, num_particles=4, seed=0, all_ranks=True)
    try:
        shuffling = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True)
        pyro_dgm.evaluate(model, shuffling, guide, all_ranks=True)
        shuffled = "no error"
    except ValueError as err:
        shuffled = str(err)
    held_out = held_out_log_likelihood(model, data, guide, num_particles=4, batch_size=16, seed=0, all_ranks=True)
    torch.manual_seed(rank)
    table = pyro_dgm.compare({"vae": (model, guide), "flat": FactorizedBernoulli(D).model}, data, num_particles=4,
                             batch_size=16, all_ranks=True)
    alone = None  # rank 0 alone, as a script's "if rank == 0:" would: by default no collective to wait in
    if rank == 0:
        alone = pyro_dgm.evaluate(model, data, guide, num_particles=4, batch_size=16, seed=0)["nll"]
    return dict(nll=nll, rows=rows, unseeded=unseeded, after=after, held_out=torch.from_numpy(held_out),
                compare=table["elpd"].tolist(), shuffled=shuffled, failed=_one_rank_fails(rank),
                presharded=(presharded["nll"], presharded["num_examples"]), alone=alone)


def picky(x):
    """A density that refuses a batch of negative data only: rank 1's batch below (evaluate's first trace,
    of all 8 rows, and rank 0's batch pass)."""
    if (x < 0).all():
        raise ValueError("picky: a negative batch")
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1), obs=x)


def _one_rank_fails(rank):
    """evaluate(all_ranks=True) where only rank 1's batch raises: the error of each rank."""
    data = torch.cat([torch.ones(4, 2), -torch.ones(4, 2)])
    try:
        pyro_dgm.evaluate(picky, data, batch_size=4, all_ranks=True)
    except (ValueError, RuntimeError) as err:
        return f"{type(err).__name__}: {err}"
    return "no error"


def score_model():
    """A small score field on 2-D points (untrained: evaluating it is the point) and its 64 points."""
    torch.manual_seed(0)
    return NCSN(2, sde=VPSDE()), _data()["param"]


def _probability_flow(rank):
    """The score field's probability-flow NLL in batches of 16 (4 batches), the rows each rank scored,
    and the NLL without a seed after each rank has drawn a stream of its own."""
    m, data = score_model()
    with _rows_scored(score_based, "probability_flow_log_prob") as scored:
        nll = score_based.probability_flow_nll(m.model, data, batch_size=16, num_steps=4, seed=0, all_ranks=True)["nll"]
    torch.manual_seed(rank)
    unseeded = score_based.probability_flow_nll(m.model, data, batch_size=16, num_steps=4, all_ranks=True)["nll"]
    return {"nll": nll, "rows": scored, "unseeded": unseeded}


def _signalled(out, rank):
    """SIGTERM to rank 1 alone after step 4, by a step hook that never stops fit: the one all-reduce of
    each step carries it, and both ranks leave after step 5 with rank 0's checkpoint."""
    def term_rank_1(state):
        if rank == 1 and state.step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    term_rank_1.stops_mid_epoch = False
    reduces = []
    plain = torch.distributed.all_reduce

    def counted(*args, **kwargs):
        reduces.append(1)
        return plain(*args, **kwargs)

    torch.distributed.all_reduce = counted
    try:
        train("library_vae", 4, checkpoint=out / "signalled.pt", callbacks=[term_rank_1])
        code = None
    except pyro_dgm.FitInterrupted as stopped:
        code = stopped.code
    finally:
        torch.distributed.all_reduce = plain
    torch.save({"code": code, "all_reduces": len(reduces)}, out / f"signalled.rank{rank}.pt")


def _stopped_by_one_rank(out, rank):
    """A step hook that stops rank 1 alone (and does not say it never stops): the ranks agree after the step."""
    def stop_rank_1(state):
        if rank == 1 and state.step == 3:
            state.stop = True

    _save(out, "stopped", rank, train("library_vae", 4, callbacks=[stop_rank_1])[0])


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
