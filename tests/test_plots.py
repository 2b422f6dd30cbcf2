from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch

from pyro_dgm import plots
from pyro_dgm.inference import MaximumLikelihood


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


def test_grids_fill_their_rows_and_keep_pixels_square(tmp_path):
    assert [plots.grid_columns(n, 10) for n in (64, 100, 7, 12, 13)] == [8, 10, 7, 6, 10]
    fig = plots.sample_grid(torch.rand(64, 64), nrow=10, title="t", path=tmp_path / "g.png")
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (8 * 9 - 1, 8 * 9 - 1)  # 8 x 8 images of 8 x 8 pixels, 1-pixel gaps
    assert fig.axes[0].get_aspect() == 1.0
    plt.close(fig)


def test_density_range_covers_the_data_and_scatter_counts_points_outside():
    data = torch.tensor([[5.0, 0.0], [0.0, -1.0]])
    fig = plots.density_2d(lambda p: -0.5 * p.pow(2).sum(-1), n=20, data=data)
    assert fig.axes[0].get_xlim() == pytest.approx((-5.5, 5.5))
    plt.close(fig)
    fig = plots.scatter_2d(torch.tensor([[0.0, 0.0], [9.0, 0.0], [0.0, -9.0]]), lim=4.0, title="s")
    assert "2 of 3 points outside the plotted range" in fig.axes[0].get_title()
    plt.close(fig)


def test_loss_curves_label_the_unit_and_draw_the_validation_curve():
    result = SimpleNamespace(losses={"model": [3.0, 2.0, 1.5, 1.2]}, objective=MaximumLikelihood())
    fig = plots.loss_curves(result, validation=[2.5, 1.4])
    ax = fig.axes[0]
    assert ax.get_ylabel() == "NLL (nats per example)"
    xs, ys = ax.lines[-1].get_data()
    assert list(xs) == [2.0, 4.0] and list(ys) == [2.5, 1.4]
    plt.close(fig)


def test_flat_examples_are_drawn_in_the_given_image_shape():
    fig = plots.sample_grid(torch.rand(3, 3072), image_shape=(3, 32, 32))
    assert fig.axes[0].images[0].get_array().shape == (32, 3 * 33 - 1, 3)  # three RGB images in a row
    plt.close(fig)
    assert plots._as_images(torch.rand(2, 64), image_shape=(1, 8, 8)).shape == (2, 8, 8)


def test_a_grid_with_given_columns_leaves_the_last_row_partial():
    fig = plots.sample_grid(torch.rand(64, 64), nrow=10, columns=10)
    assert fig.axes[0].images[0].get_array().shape == (7 * 9 - 1, 10 * 9 - 1)  # 6 full rows of 10 and 4
    plt.close(fig)


@pytest.mark.parametrize("suffix, start", [(".pdf", b"%PDF"), (".jpg", b"\xff\xd8\xff"), (".svg", b"<?xml"),
                                           (".png", b"\x89PNG")])
def test_a_figure_is_saved_in_the_format_of_its_suffix(tmp_path, suffix, start):
    fig = plots.sample_grid(torch.rand(4, 64), path=tmp_path / f"g{suffix}")
    plt.close(fig)
    assert (tmp_path / f"g{suffix}").read_bytes().startswith(start)
    with pytest.raises(ValueError, match=r"cannot write a figure as \.xyz; use one of .*\.pdf"):
        plots.save(fig, tmp_path / "g.xyz")
    assert not (tmp_path / "g.xyz").exists()
