"""What a new user gets from the package: a light import, `python -m pyro_dgm`, the files a release ships."""

import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pyro_dgm

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("arviz", "xarray", "pandas", "scipy", "matplotlib", "seaborn", "sklearn")

CHECK = f"""
import sys
import pyro_dgm
print("heavy", [m for m in {HEAVY!r} if m in sys.modules])
print("reachable", pyro_dgm.callbacks.EarlyStopping.__name__, pyro_dgm.plots.sample_grid.__name__,
      pyro_dgm.to_arviz.__module__, pyro_dgm.compare.__name__)
import runpy
sys.argv = ["pyro-dgm", "--version"]
runpy.run_module("pyro_dgm", run_name="__main__")
"""


def test_import_leaves_arviz_and_matplotlib_unloaded_until_used():
    """Which modules `import pyro_dgm` loads (not how long it takes: that is benchmarks' business)."""
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "heavy []"
    assert lines[1] == "reachable EarlyStopping sample_grid pyro_dgm.arviz compare"
    assert lines[2] == f"pyro-dgm {pyro_dgm.__version__}"


def test_the_release_ships_license_types_and_changelog():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"  # an SPDX expression (the TOML-table form is deprecated)
    assert "setuptools>=77" in meta["build-system"]["requires"]  # the first setuptools that reads it
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert (Path(pyro_dgm.__file__).parent / "py.typed").is_file()
    assert "py.typed" in meta["tool"]["setuptools"]["package-data"]["pyro_dgm"]
    assert f"## {pyro_dgm.__version__}" in (ROOT / "CHANGELOG.md").read_text()
    assert meta["project"]["version"] == pyro_dgm.__version__


def test_pytest_runs_without_xdist():
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "--collect-only", "-q",
                          "tests/test_packaging.py"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "test_packaging.py::test_pytest_runs_without_xdist" in out.stdout


def test_plain_pytest_asks_for_two_workers_one_file_each():
    from conftest import pytest_cmdline_main

    class Plugins:
        def hasplugin(self, name):
            return True

    plain = SimpleNamespace(pluginmanager=Plugins(), option=SimpleNamespace(numprocesses=None, dist="no"))
    pytest_cmdline_main(plain)
    assert (plain.option.numprocesses, plain.option.dist) == (2, "loadfile")
    chosen = SimpleNamespace(pluginmanager=Plugins(), option=SimpleNamespace(numprocesses=0, dist="no"))
    pytest_cmdline_main(chosen)
    assert chosen.option.numprocesses == 0
