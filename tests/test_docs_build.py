"""The API reference and the rendered tutorials build with Sphinx, warnings as errors (CI installs sphinx by [test])."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _have(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not (_have("sphinx") and _have("myst_parser")),
                    reason="sphinx and myst-parser are not installed: pip install -e '.[docs]'")
def test_sphinx_builds_the_reference_without_warnings(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                          "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    html = tmp_path / "html"
    fit_page = (html / "api" / "pyro_dgm.html").read_text()
    assert "pyro_dgm.fit" in fit_page and "seed" in fit_page  # autodoc read fit's docstring
    vae = re.sub(r"<[^>]+>", "", (html / "tutorials" / "vae.html").read_text())  # text without the markup
    assert "Variational autoencoders" in vae and "result = pyro_dgm.fit(vae.model, vae.guide, x" in vae
