"""Sphinx configuration: the API reference from the docstrings (autodoc, napoleon) and the tutorials.

The tutorials are jupytext percent-format ``.py`` files in ``../tutorials``; :func:`tutorial_to_myst`
turns each into a MyST Markdown page (text cells as text, code cells as code blocks) when the
build starts, so they render without executing anything and without a network.
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import pyro_dgm  # noqa: E402

project = "pyro_dgm"
author = "the pyro_dgm authors"
copyright = "2026, the pyro_dgm authors"
release = version = pyro_dgm.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
myst_heading_anchors = 3
html_theme = "alabaster"
# pyro_dgm.inference.adversarial.FDivergence writes |v| (an absolute value) in plain text, which
# reStructuredText reads as a substitution; defined here to print as written until the docstring says :math:.
rst_prolog = ".. |v| unicode:: U+7C U+76 U+7C\n"
# Links in the Markdown pages to files outside docs/ (README's figures, the tutorials' sources).
suppress_warnings = ["myst.xref_missing"]

TUTORIAL_ORDER = ["autoregressive", "vae", "flows", "gan", "ebm", "score_based", "pyro_program", "arviz", "controlled",
                  "cli", "multi_gpu"]


def tutorial_to_myst(source: Path) -> str:
    """A jupytext percent-format script as MyST Markdown: ``# %% [markdown]`` cells as text, others as code."""
    lines = source.read_text().splitlines()
    if lines and lines[0] == "# ---":  # the jupytext header block
        lines = lines[lines.index("# ---", 1) + 1:]
    cells, kind, body = [], None, []
    for line in lines + ["# %%"]:
        if line.startswith("# %%"):
            if kind is not None and any(b.strip() for b in body):
                cells.append((kind, body))
            kind, body = ("markdown" if "[markdown]" in line else "code"), []
        elif kind == "markdown":
            body.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        elif kind is not None:
            body.append(line)
    out = []
    for kind, body in cells:
        text = "\n".join(body).strip("\n")
        out.append(text if kind == "markdown" else f"```python\n{text}\n```")
    run = f"python tutorials/{source.name}"
    out.insert(1, f"*Run it with* `{run}` *(``PYRO_DGM_TUTORIAL_FAST=1`` for a quick pass; figures go to "
                  f"``PYRO_DGM_TUTORIAL_OUT``, default ``runs/tutorials``).*")
    return "\n\n".join(out) + "\n"


def _write_tutorials():
    folder = DOCS / "tutorials"
    folder.mkdir(exist_ok=True)
    names = [n for n in TUTORIAL_ORDER if (ROOT / "tutorials" / f"{n}.py").is_file()]
    for name in names:
        page = tutorial_to_myst(ROOT / "tutorials" / f"{name}.py")
        target = folder / f"{name}.md"
        if not target.is_file() or target.read_text() != page:  # unchanged pages keep Sphinx's cache valid
            target.write_text(page)
    index = "# Tutorials\n\n```{toctree}\n:maxdepth: 1\n\n" + "\n".join(names) + "\n```\n"
    if not (folder / "index.md").is_file() or (folder / "index.md").read_text() != index:
        (folder / "index.md").write_text(index)


_write_tutorials()
