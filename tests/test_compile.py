"""fit(..., compile=...): the networks compiled, the loss trajectory of eager, no recompiles after warm-up."""

from __future__ import annotations

import pytest
import torch

import pyro_dgm
from pyro_dgm.models import VAE
from pyro_dgm.training.compiling import networks

dynamo = pytest.importorskip("torch._dynamo")
pytestmark = pytest.mark.skipif(not dynamo.is_dynamo_supported(), reason="torch.compile is not supported here")


def _train(compile, epochs=2):
    torch.manual_seed(0)
    vae = VAE(8, latent_dim=2, hidden=(16,))
    x = torch.bernoulli(torch.full((40, 8), 0.3), generator=torch.Generator().manual_seed(0))
    graphs = []
    record = lambda state: graphs.append(dynamo.utils.counters["stats"]["unique_graphs"])  # noqa: E731
    r = pyro_dgm.fit(vae.model, vae.guide, x, epochs=epochs, batch_size=16, seed=0, compile=compile,
                     callbacks=[record], progress=False)
    return vae, r, graphs


def test_compiled_networks_train_as_eager_and_stop_recompiling_after_the_first_epoch():
    dynamo.reset()
    dynamo.utils.counters.clear()
    # aot_eager: TorchDynamo's capture and AOTAutograd's joint graph, without a C++ toolchain (fast on CI)
    vae, compiled, graphs = _train({"backend": "aot_eager"}, epochs=3)
    _, eager, _ = _train(False, epochs=3)
    assert dynamo.utils.counters["frames"]["ok"] >= 2  # the encoder and the decoder were captured
    torch.testing.assert_close(torch.tensor(compiled.losses["model"]), torch.tensor(eager.losses["model"]),
                               rtol=1e-5, atol=1e-5)
    per_epoch = 3  # batches of 16, 16 and 8: the short one recompiles once, with a dynamic batch size
    assert graphs[per_epoch - 1] == graphs[-1] > 0
    assert "forward" not in vars(vae.encoder)  # eager again after fit; the state_dict is the eager one
    assert networks([vae], [vae]) == [vae.encoder, vae.decoder]  # the program's owner itself stays eager


def test_compile_refuses_what_it_cannot_pass_to_torch_compile():
    vae = VAE(4, latent_dim=2, hidden=(8,))
    with pytest.raises(ValueError, match="compile: expected True, False or a dict"):
        pyro_dgm.fit(vae.model, vae.guide, torch.zeros(8, 4), steps=1, compile="yes", progress=False)


def test_compile_refuses_an_objective_that_differentiates_a_gradient_before_training():
    """wgan-gp, R1 and score matching of an EBM need a double backward, which torch.compile does not support
    (before: raw torch errors at the first step)."""
    from pyro_dgm.inference import Adversarial, ScoreMatching
    from pyro_dgm.models import EBM, EnergyMLP, MLPCritic, MLPGenerator

    x = torch.randn(32, 2)
    gan = MLPGenerator(2, latent_dim=2, hidden=(8,))
    ebm = EBM(EnergyMLP(2, hidden=(8,)), 2)
    cases = [(gan.model, Adversarial(MLPCritic(2, hidden=(8,)), loss="wgan-gp")),
             (gan.model, Adversarial(MLPCritic(2, hidden=(8,)), loss="ns", r1_weight=1.0)),
             (ebm.model, ScoreMatching("exact"))]
    for model, objective in cases:
        with pytest.raises(ValueError, match="compile: .*double backward.*compile=False"):
            pyro_dgm.fit(model, None, x, objective=objective, steps=1, compile=True, progress=False)
    r = pyro_dgm.fit(gan.model, None, x, objective=Adversarial(MLPCritic(2, hidden=(8,)), loss="ns"), steps=1,
                     progress=False, compile=False)
    assert len(r.losses["critic"]) == 1
