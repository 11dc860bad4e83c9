"""Where rnnlab keeps what it can compute again (compiled programs, the floor's reports), by one rule:

    ENV unset, "", "1", "on", "true", "yes"   platformdirs.user_cache_dir("rnnlab") / name
    ENV "0", "off", "false", "no"             nowhere (None: the cache is off)
    ENV anything else                         that folder
"""

from __future__ import annotations

import os
from pathlib import Path

_OFF = ("0", "off", "false", "no")
_ON = ("", "1", "on", "true", "yes")


def folder(env: str, name: str) -> Path | None:
    """The cache folder the environment variable `env` chooses for `name`, or None when it turns it off."""
    setting = os.environ.get(env, "").strip()
    if setting.lower() in _OFF:
        return None
    if setting.lower() in _ON:
        import platformdirs

        return Path(platformdirs.user_cache_dir("rnnlab")) / name
    return Path(setting).expanduser()
