"""Old argument names kept for one release, with a warning that names the new one.

Names follow one rule across the package (docs/CONTRIBUTING.md, "Names"):
``num_samples`` for draws handed back to the user, ``num_particles`` for
Monte Carlo draws inside an estimator, ``num_chains`` for parallel MCMC
chains, ``num_projections`` for random probe vectors of a trace estimator,
``num_steps``/``step_size``/``noise_scale`` for a Langevin chain.
"""

from __future__ import annotations

import functools
import warnings

__all__ = ["renamed"]


def renamed(**old_to_new):
    """Accept each ``old=`` keyword as ``new=``, with a ``FutureWarning`` (both at once: a TypeError).

    Example::

        >>> @renamed(step_lr="step_size")
        ... def run(step_size=1.0):
        ...     return step_size
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     run(step_lr=0.5)
        0.5
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in old_to_new.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{fn.__qualname__}: got both {old}= and its new name {new}=")
                warnings.warn(f"{fn.__qualname__}: {old}= is deprecated and goes in the next release; "
                              f"use {new}=", FutureWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)
        return wrapper
    return decorate


def renamed_attribute(new: str, old: str):
    """A read-only property ``old`` that warns and returns ``self.<new>``."""
    def get(self):
        warnings.warn(f"{type(self).__name__}.{old} is deprecated and goes in the next release; use .{new}",
                      FutureWarning, stacklevel=2)
        return getattr(self, new)
    return property(get, doc=f"Deprecated name of ``{new}``.")
