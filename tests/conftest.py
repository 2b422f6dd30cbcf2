import os
import warnings

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
warnings.filterwarnings("ignore", category=FutureWarning)

# Two cores, two xdist workers: one thread each avoids oversubscription.
torch.set_num_threads(int(os.environ.get("PYRO_DGM_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _fresh_state():
    """Every test starts from seed 0, validation on, and an empty param store."""
    import pyro

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """`pytest` runs on two xdist workers, one file per worker; `-n N` and `-p no:xdist` override it."""
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return
    if config.option.numprocesses is None:
        config.option.numprocesses = 2
    if config.option.dist == "no":
        config.option.dist = "loadfile"
