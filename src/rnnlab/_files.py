"""Files written whole or not at all, for runs and caches alike (`checkpoint` re-exports these):

    atomic_write(path, data)   # a temporary file in the same folder, fsynced, renamed over the old one,
                               # then the folder fsynced: a reader or a crash sees the old file or the new
    fsync_dir(folder)          # a rename in `folder` made durable

A write that fails is a RunError naming the file, the old file left in place.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class RunError(ValueError):
    """A run folder or run file that cannot be used: the message names the file and what is wrong."""


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename in it) to disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself stays atomic
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader (or a crash) sees the old file or the new one, never half.
    The file gets the mode a plain `open` would give it (0666 less the umask). An OS error (a full disk, a
    folder that cannot be written) is a RunError naming the file, the old file left as it was. A path that
    is not a regular file (/dev/null, a pipe) is written in place: a rename would replace the device."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as e:
            raise RunError(f"{path}: cannot write it ({e.strerror or e})") from None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise RunError(f"{path}: cannot write it ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise RunError(f"{path}: cannot write it ({e.strerror or e}); the file as it was is left in place") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
