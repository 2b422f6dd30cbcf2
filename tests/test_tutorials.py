"""Every tutorial runs, at the small settings of PYRO_DGM_TUTORIAL_FAST=1, prints its numbers and writes its figures."""

import re
import runpy
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"

#: tutorial -> (a line it prints, with a number in it; the figures it writes)
EXPECTED = {
    "autoregressive": (r"MADE, 8 orderings +test NLL +\d+\.\d+ nats", ["made_samples.png"]),
    "vae": (r"IWAE: \d+\.\d+ nats \(\d\.\d+ bits/dim, IWAE, K=20\)",
            ["samples.png", "reconstructions.png", "latent.png", "loss.png"]),
    "flows": (r"MAF +test NLL \d+\.\d+ nats per point \(exact\)", ["densities.png", "realnvp_samples.png"]),
    "gan": (r"modes covered: \d of 8; samples near a mode: \d\.\d+; MMD\^2 to held-out data: \d+\.\d+",
            ["samples.png", "loss.png"]),
    "ebm": (r"score matching +test NLL \d+\.\d+ nats per point \(log Z", ["densities.png", "samples.png"]),
    "score_based": (r"test NLL -?\d+\.\d+ nats per point \(probability-flow", ["samples.png"]),
    "pyro_program": (r"posterior mean of the fairness: 0\.\d+ \(exact: 0\.583\)", ["vae_loss.png"]),
    "arviz": (r"VAE +test NLL \d+\.\d+ nats per image", ["coin_posterior.png", "compare.png"]),
    "cli": (r"validation NLL of the loaded run: \d+\.\d+ nats", ["vae/samples.png"]),
    "multi_gpu": (r"test NLL: rank 0 (\d+\.\d+), rank 1 \1 \(each of 360 test digits scored once, by one rank\), "
                  r"the same weights in 1 process \1\n"
                  r".*largest weight difference \d\.\d\de-(0[5-9]|[1-9]\d); final losses",
                  ["losses.png"]),
    "controlled": (r"by the 'ancestral' route: log p\(bottom half \| top half\) of the true digits -\d+\.\d+ nats",
                   ["cvae_samples.png", "made_inpainting.png"]),
}


def test_every_tutorial_is_listed():
    assert sorted(p.stem for p in TUTORIALS.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.slow  # short training runs, but ten of them: about a minute of CPU in all
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tutorial_runs_prints_numbers_and_writes_figures(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYRO_DGM_TUTORIAL_FAST", "1")
    monkeypatch.setenv("PYRO_DGM_TUTORIAL_OUT", str(tmp_path))
    path = TUTORIALS / f"{name}.py"
    text = path.read_text()
    assert text.startswith("# ---\n# jupyter:") and "# %% [markdown]" in text  # jupytext percent format
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        plt.close("all")
    printed, figures = EXPECTED[name]
    out = capsys.readouterr().out
    assert re.search(printed, out), out
    for figure in figures:
        assert (tmp_path / name / figure).stat().st_size > 5000, figure
