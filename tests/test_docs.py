"""Every docstring example in the package runs and prints what it says."""

import doctest
import importlib
import pkgutil

import pytest

import pyro_dgm

MODULES = sorted(m.name for m in pkgutil.walk_packages(pyro_dgm.__path__, "pyro_dgm.")
                 if not m.name.endswith("cli"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


@pytest.mark.parametrize("name", MODULES)
def test_sources_compile_without_warnings(name):
    """An invalid escape in a docstring (``\\,`` or ``\\alpha`` written with one backslash) is a bug."""
    import warnings

    path = importlib.import_module(name).__file__
    with open(path) as f, warnings.catch_warnings():
        warnings.simplefilter("error")
        compile(f.read(), path, "exec")
