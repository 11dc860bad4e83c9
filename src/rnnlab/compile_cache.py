"""JAX's persistent compilation cache, so that a second run of the same shapes loads its programs instead of
compiling them again.

On by default, in the user's cache folder (`platformdirs.user_cache_dir("rnnlab")/jax`, e.g.
~/.cache/rnnlab/jax). The environment chooses otherwise:

    RNNLAB_COMPILE_CACHE=0          off
    RNNLAB_COMPILE_CACHE=/some/dir  that folder

A cache folder set through JAX itself (`jax_compilation_cache_dir`) is left as it is. Every program is
cached, however quickly it compiled (JAX's own threshold is 1 s): a training run is many programs of a
fraction of a second each.
"""

from __future__ import annotations

from pathlib import Path

import jax

from rnnlab import _cache

ENV = "RNNLAB_COMPILE_CACHE"


def folder() -> Path | None:
    """Where programs are cached by the environment's setting; None when it turns the cache off."""
    return _cache.folder(ENV, "jax")


def enable() -> Path | None:
    """Turn the cache on (idempotent) unless the environment turns it off; the folder in use, or None."""
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    path = folder()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # an unwritable cache folder costs compile time, never the run
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path
