import matplotlib.pyplot as plt
import pytest
import torch

from pyro_dgm import plots


def _pixels(path):
    img = plt.imread(path)
    return img.shape, float(img.std())


def test_figures_are_written_and_not_blank(tmp_path):
    x = torch.rand(20, 64)
    figs = {
        "grid.png": plots.sample_grid(x, nrow=5, path=tmp_path / "grid.png"),
        "rec.png": plots.reconstructions(x, 1 - x, n=5, path=tmp_path / "rec.png"),
        "lat.png": plots.latent_scatter(torch.randn(50, 2), torch.randint(0, 3, (50,)), path=tmp_path / "lat.png"),
        "loss.png": plots.loss_curves({"model": list(range(100, 0, -1))}, path=tmp_path / "loss.png"),
        "dens.png": plots.density_2d(lambda p: -0.5 * p.pow(2).sum(-1), lim=3, n=50, path=tmp_path / "dens.png"),
        "scat.png": plots.scatter_2d(torch.randn(100, 2), path=tmp_path / "scat.png"),
    }
    for name, fig in figs.items():
        shape, std = _pixels(tmp_path / name)
        assert shape[0] > 50 and std > 0.01, name
        plt.close(fig)


def test_image_layouts():
    assert plots._as_images(torch.rand(3, 1, 8, 8)).shape == (3, 8, 8)
    assert plots._as_images(torch.rand(3, 3, 8, 8)).shape == (3, 8, 8, 3)
    with pytest.raises(ValueError, match="cannot lay out examples of 10 values"):
        plots._as_images(torch.rand(2, 10))
