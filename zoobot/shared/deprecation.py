"""Deprecated aliases and module aliases, written once for both backends' ``_compat`` modules.

:func:`deprecated_alias` wraps a function under its old name: it works as before and warns
``DeprecationWarning`` naming the replacement. :func:`alias_module` makes an old import path give the
very module object of the new one (no copy, no warning: for paths that the user documentation shows).
See docs/compatibility.md.
"""
from __future__ import annotations

import functools
import importlib
import sys
import types
import warnings

__all__ = ["deprecated_alias", "alias_module"]


def deprecated_alias(function, old_name: str, new_name: str):
    """``function`` under an old name: same arguments and result, plus a ``DeprecationWarning`` per call.

    Parameters
    ----------
    function : callable
        The replacement.
    old_name, new_name : str
        Dotted names shown in the warning, e.g. ``'losses.dirichlet_loss'``.

    Examples
    --------
    >>> import warnings
    >>> old = deprecated_alias(abs, 'old_abs', 'abs')
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter('always')
    ...     old(-2)
    2
    >>> str(caught[0].message)
    'old_abs is deprecated: use abs (same result).'
    """
    message = f"{old_name} is deprecated: use {new_name} (same result)."

    @functools.wraps(function)
    def alias(*args, **kwargs):
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return function(*args, **kwargs)

    alias.__name__ = old_name.rsplit(".", 1)[-1]
    alias.__qualname__ = alias.__name__
    alias.__doc__ = f"Deprecated alias of :func:`{new_name}` (warns ``DeprecationWarning``).\n\n{function.__doc__ or ''}"
    alias.__deprecated_alias_of__ = function
    return alias


def alias_module(old_name: str, new_name: str, submodules: tuple = ()) -> types.ModuleType:
    """Make ``import old_name`` (and ``old_name.<submodule>``) give the module objects of ``new_name``.

    Parameters
    ----------
    old_name, new_name : str
        Dotted module names; ``old_name`` is usually the ``__name__`` of the calling shim module.
    submodules : tuple of str
        Submodules of ``new_name`` to alias under ``old_name`` as well.

    Returns
    -------
    module
        The module ``new_name`` (now also ``sys.modules[old_name]``).
    """
    module = importlib.import_module(new_name)
    sys.modules[old_name] = module
    for sub in submodules:
        sys.modules[f"{old_name}.{sub}"] = importlib.import_module(f"{new_name}.{sub}")
    return module
