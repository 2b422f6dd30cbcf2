"""fit on two gloo ranks (issue 14): the same numbers as one process at twice the batch.

Two CPU processes run the functions of ``ddp_worker.py``: forked from this
process with torchrun's environment variables (cheap: no second import of
torch), and once under ``python -m torch.distributed.run`` itself. Each
comparison is against the same function run here, in one process, at
batch 2B.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import ProcessException

sys.path.insert(0, str(Path(__file__).parent))
import ddp_worker  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(rank, out, mode, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    ddp_worker.main(out, mode)


def _two_ranks(out, mode):
    torch.multiprocessing.start_processes(_child, args=(out, mode, _free_port()), nprocs=2, start_method="fork")


@pytest.fixture(scope="module")
def one_process():
    """The one-process runs at batch 16 (run first: the forked ranks inherit a warmed-up Pyro)."""
    return {name: ddp_worker.train(name, 16)[0] for name in ("vae", "gan", "param", "param_loader")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_process):
    out = tmp_path_factory.mktemp("ddp")
    with pytest.raises(ProcessException):  # rank 1 killed; rank 0 cut off from it
        _two_ranks(out, "killed")
    killed_at = torch.load(out / "killed.pt", weights_only=True)["step"]
    _two_ranks(out, "compare")
    return out, killed_at


def _load(out, name):
    return [torch.load(out / f"{name}.rank{r}.pt", weights_only=True) for r in (0, 1)]


def _assert_same(one, ranks):
    for group, losses in one.losses.items():
        torch.testing.assert_close(torch.tensor(ranks[0]["losses"][group]), torch.tensor(losses),
                                   rtol=1e-5, atol=1e-5)
    for a, b, c in zip(ddp_worker.weights(one), ranks[0]["weights"], ranks[1]["weights"]):
        assert torch.equal(b, c)  # the ranks never drift apart
        if a.is_floating_point():
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["vae", "gan", "param", "param_loader"])
def test_two_ranks_at_half_the_batch_train_as_one_process(runs, one_process, name):
    out, _ = runs
    one = one_process[name]
    assert sum(len(v) for v in one.losses.values()) >= 8
    _assert_same(one, _load(out, name))


def test_a_killed_rank_resumes_from_rank_0s_checkpoint_as_if_never_stopped(runs):
    out, killed_at = runs
    assert killed_at == 3  # the last checkpoint before the kill at step 5: mid-epoch (8 batches per rank)
    full, resumed = _load(out, "full"), _load(out, "resumed")
    for r in (0, 1):
        assert resumed[r]["losses"] == full[r]["losses"] and len(full[r]["losses"]["model"]) == 10
        for a, b in zip(full[r]["weights"], resumed[r]["weights"]):
            assert torch.equal(a, b)


def test_ranks_stop_early_together_share_the_nll_monitor_and_keep_their_own_replay_buffers(runs):
    out, _ = runs
    early = _load(out, "early")
    assert early[0]["history"] == early[1]["history"] and 2 <= len(early[0]["history"]) < 8  # rank 0's decision
    for a, b in zip(early[0]["weights"], early[1]["weights"]):  # the same best weights restored on both
        assert torch.equal(a, b)
    by_nll = [torch.load(out / f"early_nll.rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert by_nll[0]["own"] == by_nll[1]["own"] == by_nll[0]["history"] and len(by_nll[0]["own"]) == 3
    assert by_nll[0]["rows"] == by_nll[1]["rows"] == [8, 8] * 3  # the IWAE monitor's 4 batches, 2 a rank an epoch
    state = torch.load(out / "pcd.pt", weights_only=True)
    buffers = [r["objective"]["buffer"] for r in state["ranks"]]
    assert buffers[0].shape == buffers[1].shape == (32, 2) and not torch.equal(buffers[0], buffers[1])
    assert torch.equal(state["objective"]["buffer"], buffers[0])


def test_a_signal_to_one_rank_stops_both_after_the_next_step_without_a_collective_of_its_own(runs):
    out, _ = runs
    ranks = [torch.load(out / f"signalled.rank{r}.pt", weights_only=True) for r in (0, 1)]
    # SIGTERM reached rank 1 after step 4; it rode in step 5's gradient all-reduce, the only one of a step
    assert [r["code"] for r in ranks] == [128 + signal.SIGTERM] * 2
    assert [r["all_reduces"] for r in ranks] == [5, 5]
    assert torch.load(out / "signalled.pt", weights_only=True)["step"] == 5


def test_a_step_hook_that_stops_one_rank_stops_both_at_that_step(runs):
    out, _ = runs
    stopped = _load(out, "stopped")
    assert len(stopped[0]["losses"]["model"]) == len(stopped[1]["losses"]["model"]) == 3
    for a, b in zip(stopped[0]["weights"], stopped[1]["weights"]):
        assert torch.equal(a, b)


def test_evaluate_on_two_ranks_shares_the_batches_and_gives_the_nll_of_one_process(runs):
    out, _ = runs
    from pyro_dgm.arviz import held_out_log_likelihood
    from pyro_dgm.models import VAE

    full = _load(out, "full")
    vae = VAE(ddp_worker.D, latent_dim=ddp_worker.Z, hidden=(8,))
    vae.load_state_dict(dict(zip(vae.state_dict(), full[0]["weights"])))
    data = ddp_worker._data()["library_vae"]
    one = ddp_worker.pyro_dgm.evaluate(vae.model, data, vae.guide, num_particles=4, batch_size=16, seed=0)
    assert full[0]["nll"] == full[1]["nll"] == pytest.approx(one["nll"], rel=1e-6)
    assert (full[0]["rows"], full[1]["rows"]) == ([16, 16], [16, 12])  # batches 0, 2 and 1, 3 of 60 rows
    assert full[0]["unseeded"] == full[1]["unseeded"]  # rank 0's seed, although each rank drew its own stream
    assert full[0]["unseeded"] != full[0]["nll"]
    for r in (0, 1):  # the shared seed, rank 0's draw included, ran on a fork of each rank's state
        torch.manual_seed(r)
        assert torch.equal(full[r]["after"], torch.rand(3))
    assert full[0]["presharded"] == full[1]["presharded"]
    assert full[0]["presharded"][1] == 60  # each rank's 30 rows of the DistributedSampler, gathered
    assert "its order must be the same on every rank: this one's RandomSampler" in full[0]["shuffled"]
    assert full[1]["failed"].startswith("ValueError: picky: a negative batch")  # its own error; no rank waits
    assert full[0]["failed"].startswith("RuntimeError: another rank failed while scoring")
    assert full[0]["alone"] == pytest.approx(one["nll"], rel=1e-6)
    held_out = held_out_log_likelihood(vae.model, data, vae.guide, num_particles=4, batch_size=16, seed=0)
    torch.testing.assert_close(full[0]["held_out"], torch.from_numpy(held_out))
    assert torch.equal(full[0]["held_out"], full[1]["held_out"])
    assert full[0]["compare"] == full[1]["compare"]  # no seed: rank 0's


def test_the_probability_flow_nll_on_two_ranks_shares_the_batches_and_is_one_processs(runs):
    out, _ = runs
    from pyro_dgm.inference import probability_flow_nll

    ranks = [torch.load(out / f"flow_nll.rank{r}.pt", weights_only=True) for r in (0, 1)]
    m, data = ddp_worker.score_model()
    one = probability_flow_nll(m.model, data, batch_size=16, num_steps=4, seed=0)["nll"]
    assert ranks[0]["nll"] == ranks[1]["nll"] == pytest.approx(one, rel=1e-6)
    assert ranks[0]["rows"] == ranks[1]["rows"] == [16, 16]  # batches 0, 2 and 1, 3 of 64 points
    assert ranks[0]["unseeded"] == ranks[1]["unseeded"]


@pytest.mark.slow  # two fresh interpreters import torch: about 15 s on an idle machine
def test_glow_with_actnorm_under_torchrun(tmp_path):
    """The real launcher: ActNorm's data-dependent start agrees across ranks and with one process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(Path(__file__).parent / "ddp_worker.py"), str(tmp_path), "glow"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, model, _, data = ddp_worker.train("glow", 16)
    ranks = _load(tmp_path, "glow")
    _assert_same(one, ranks)
    nll = ddp_worker.pyro_dgm.evaluate(model, data)["nll"]
    assert ranks[0]["nll"] == ranks[1]["nll"] == pytest.approx(nll, rel=1e-4)


@pytest.mark.parametrize("n", [12, 7])
def test_shards_cover_every_example_once_per_epoch_and_rejoin_into_the_one_process_batches(n):
    from pyro_dgm.training.batching import Batches

    x = torch.arange(float(n)).unsqueeze(1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=2, shuffle=True)

    def epoch(data, rank, world, batch_size, e=1, skip=0):
        b = Batches(data, batch_size, True, False, 5, torch.device("cpu"), rank=rank, world=world)
        return [batch[0] if isinstance(batch, (list, tuple)) else batch for batch in b.epoch(e, skip)]

    one = epoch(x, 0, 1, 4)
    for data in (x, loader):
        ranks = [epoch(data, r, 2, 2) for r in (0, 1)]
        assert len(ranks[0]) == len(ranks[1])  # the same number of steps on every rank
        rows = torch.cat([t for r in ranks for t in r]).flatten()
        assert sorted(set(rows.tolist())) == list(range(n)) and rows.numel() == 2 * -(-n // 2)  # padded once
        if n % 2 == 0:  # no padding: rank batches i together are the one-process batch i
            for i, batch in enumerate(one):
                assert sorted(torch.cat([ranks[0][i], ranks[1][i]]).flatten().tolist()) == sorted(batch.flatten().tolist())
        assert torch.equal(torch.cat(epoch(data, 1, 2, 2, skip=1)), torch.cat(ranks[1][1:]))  # resumable mid-epoch


def test_auto_device_is_cuda_when_there_is_one_else_the_cpu():
    from pyro_dgm.training.devices import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    x = torch.bernoulli(torch.full((16, 4), 0.5))
    m = ddp_worker.VAE(4, latent_dim=2, hidden=(8,))
    r = ddp_worker.pyro_dgm.fit(m.model, m.guide, x, steps=1, batch_size=8, device="auto", progress=False)
    assert r.device == resolve_device("auto") and next(m.parameters()).device.type == r.device.type


def test_an_explicit_gpu_shared_by_several_local_ranks_is_refused(monkeypatch):
    """A script's device="cuda:0" under torchrun --nproc_per_node 2 would put both ranks on one GPU."""
    from pyro_dgm.training.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with pytest.raises(ValueError, match="LOCAL_RANK=1 of 2 ranks.*CUDA_VISIBLE_DEVICES"):
        resolve_device("cuda:0", local_rank=1, local_world_size=2)
    assert resolve_device("cuda", local_rank=1, local_world_size=2) == torch.device("cuda", 1)
    assert resolve_device("cuda:1", local_rank=1, local_world_size=2) == torch.device("cuda", 1)
    assert resolve_device("cuda:3") == torch.device("cuda", 3)  # one process may take any GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # CUDA_VISIBLE_DEVICES set per rank
    assert resolve_device("cuda:0", local_rank=1, local_world_size=2) == torch.device("cuda", 0)


def test_only_a_step_hook_that_may_stop_makes_the_ranks_agree_after_every_step():
    from pyro_dgm.callbacks import EarlyStopping, WeightAverage
    from pyro_dgm.fit import _may_stop_mid_epoch

    stamps = []

    def timer(state):
        stamps.append(state.step)

    timer.stops_mid_epoch = False
    quiet = [WeightAverage(), EarlyStopping(torch.zeros(4, 2)), timer]  # EarlyStopping stops at epoch ends
    assert not _may_stop_mid_epoch(quiet)
    assert _may_stop_mid_epoch(quiet + [lambda state: None])


@pytest.mark.slow  # the real launcher, twice: fresh interpreters import torch, about 30 s on an idle machine
def test_the_cli_under_torchrun_as_the_readme_writes_it(tmp_path, capsys):
    """``torchrun ... -m pyro_dgm -- train ...`` and ``-- evaluate RUN``: rank 0 alone reports, and the NLL is
    one process's."""
    from pyro_dgm.cli import main

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}

    def launch(*argv):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                               "2", "-m", "pyro_dgm", "--", *argv], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    run = tmp_path / "vae"
    trained = launch("train", "--model", "vae", "--data", "digits", "--steps", "3", "--batch-size", "32",
                     "--no-progress", "--out", str(run))
    assert trained.count("trained vae on digits: 3 steps") == 1
    scored = [line for line in launch("evaluate", str(run), "--num-particles", "5").splitlines() if " NLL " in line]
    assert main(["evaluate", str(run), "--num-particles", "5"]) == 0
    assert scored == [capsys.readouterr().out.strip()]  # once, and the number one process prints
