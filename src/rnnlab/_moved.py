"""Old module paths that moved into subpackages, kept importable: `import rnnlab.inspect` still works,
with a DeprecationWarning naming the new home.

An old path is a facade over the modules that now hold its names (a module split into its computing and its
drawing is looked up in both, in order): reading a name reads it from the first module that has it, setting
one sets it there (so a monkeypatch through the old name reaches the same functions). `rnnlab.explain` is
also the package's function: importing the old module path puts the facade in its place, so the facade
calls `explain` when called.

`install()` is called once by `rnnlab/__init__.py`. The rule: a module that moves gets one line in MOVED,
and no file of its own at the old path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings

# old module -> the modules that hold its names now, looked up in this order
MOVED: dict[str, tuple[str, ...]] = {
    "rnnlab.tune_task": ("rnnlab.tune.task",),
    "rnnlab.tune_report": ("rnnlab.tune.report",),
    "rnnlab.inspect": ("rnnlab.teach.states", "rnnlab.teach.states_views"),
    "rnnlab.experiments": ("rnnlab.teach.elman.experiments", "rnnlab.teach.elman.views"),
    "rnnlab.data.elman": ("rnnlab.teach.elman.data",),
    "rnnlab.explain": ("rnnlab.teach.explain", "rnnlab.teach.explain_views"),
}
# old module -> the function a call of the facade runs (where the old path is also a function's name)
CALLS: dict[str, tuple[str, str]] = {"rnnlab.explain": ("rnnlab.teach.explain", "explain")}


class Facade(types.ModuleType):
    """An old module path: its names are read from (and set in) the modules in `_moved_to`, in order."""

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        for module in self.__dict__["_moved_modules"]:
            try:
                return getattr(module, name)
            except AttributeError:
                continue
        raise AttributeError(f"module {self.__name__!r} (moved to {' and '.join(self._moved_to)}) "
                             f"has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if (name.startswith("__") and name.endswith("__")) or name.startswith("_moved"):
            super().__setattr__(name, value)
            return
        modules = self.__dict__["_moved_modules"]
        holder = next((m for m in modules if hasattr(m, name)), modules[0])
        setattr(holder, name, value)

    def __delattr__(self, name: str) -> None:
        modules = self.__dict__["_moved_modules"]
        holder = next((m for m in modules if name in vars(m)), None)
        if holder is None:
            super().__delattr__(name)
        else:
            delattr(holder, name)

    def __dir__(self) -> list[str]:
        return sorted({n for m in self.__dict__["_moved_modules"] for n in dir(m)} | set(self.__dict__))

    def __call__(self, *args, **kwargs):
        call = CALLS.get(self.__name__)
        if call is None:
            raise TypeError(f"'module' object {self.__name__!r} is not callable")
        return getattr(importlib.import_module(call[0]), call[1])(*args, **kwargs)


def _warn(message: str) -> None:
    """A DeprecationWarning at the line that ran the import: the first frame outside this module, the import
    system and the type checkers that wrap functions under test."""
    frame = sys._getframe(1)
    while frame.f_back is not None and (frame.f_globals.get("__name__", "").startswith(_PASSED)
                                        or "importlib" in frame.f_code.co_filename):
        frame = frame.f_back
    where = frame.f_globals
    # no module_globals: with them the warning asks the module's loader for its source, and the loader of
    # `python -c` code (__main__) raises ImportError; the line is read from the file instead
    warnings.warn_explicit(message, DeprecationWarning, frame.f_code.co_filename, frame.f_lineno,
                           module=where.get("__name__"), registry=where.setdefault("__warningregistry__", {}))


_PASSED = (__name__, "importlib", "jaxtyping", "beartype")


class _Alias(importlib.abc.Loader):
    def __init__(self, new: tuple[str, ...]):
        self.new = new

    def create_module(self, spec):
        _warn(f"{spec.name} moved to {' and '.join(self.new)}; import it from there")
        facade = Facade(spec.name)
        facade._moved_to = self.new
        facade._moved_modules = tuple(importlib.import_module(n) for n in self.new)
        names = [n for m in facade._moved_modules for n in getattr(m, "__all__", ())]
        facade.__all__ = list(dict.fromkeys(names))
        facade.__doc__ = f"Moved to {' and '.join(self.new)}."
        return facade

    def exec_module(self, module) -> None:
        pass  # the new modules ran when they were imported


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(name, _Alias(MOVED[name]))


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
