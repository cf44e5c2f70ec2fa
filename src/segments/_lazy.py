"""Lazy re-exports for packages: a name's module is imported the first time it is used.

Packages list their public names once (module -> names) and call :func:`lazy_exports`, as
scikit-learn's ``__init__`` does, so ``import segments`` and ``segments --help`` stay cheap.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package whose public names win over its same-named submodules.

    Importing ``segments.prepare`` (the package) binds it as attribute ``prepare`` of
    ``segments``, hiding the lazily exported function ``segments.prepare``. The binding is
    dropped instead, so the name still resolves to the function, and only when first used:
    resolving it at binding time would import the whole stage whenever one of its light
    modules (``segments.prepare.pseudonym``) is imported.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        source = self.__dict__.get("_lazy_source", {})
        if isinstance(value, types.ModuleType) and name in source:
            module, _ = source[name]
            if importlib.util.resolve_name(module, self.__name__) == value.__name__:
                return
        super().__setattr__(name, value)


def lazy_exports(
    package: str,
    exports: Mapping[str, tuple[str, ...]],
    renamed: Mapping[str, tuple[str, str]] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Return ``(__getattr__, __dir__, __all__)`` for ``package``.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : mapping
        Module -> the public names it provides (module names may be relative to the package,
        starting with ``.``).
    renamed : mapping, optional
        Public name -> (module, name in that module), where the two differ.

    Examples
    --------
    >>> get, _, names = lazy_exports("segments", {"segments.workspace": ("Workspace",)})
    >>> names, get("Workspace").__name__
    (['Workspace'], 'Workspace')
    """
    source = {name: (module, name) for module, names in exports.items() for name in names}
    source.update(renamed or {})
    namespace = importlib.import_module(package).__dict__
    namespace["_lazy_source"] = source
    sys.modules[package].__class__ = _LazyPackage

    def __getattr__(name: str) -> Any:
        try:
            module, attribute = source[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module, package), attribute)
        namespace[name] = value  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(source))

    return __getattr__, __dir__, list(source)
