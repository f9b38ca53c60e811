"""The files a config names: profiles (``builtin:NAME`` or a path relative to the YAML)
and any other path a setting holds, each problem a :class:`ConfigError` naming the key."""

from __future__ import annotations

from pathlib import Path

from servesim.workloads import PROFILES_DIR
from servesim.workloads.profile import profiles_in

from .config import ConfigError

BUILTIN = "builtin:"


def exists(path: Path, key: str) -> bool:
    """Whether the file a setting (``key``) names exists; a path the system cannot even
    look up (too long, say) is that setting's error, not a traceback."""
    try:
        return path.exists()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot use the path {str(path)[:80]!r}... ({exc.strerror or exc})") from None


def profile_path(name: str, base_dir: Path, key: str = "model.profile") -> Path:
    """The file a profile setting (``key``) names: ``builtin:NAME`` or a path relative to the YAML."""
    if name.startswith(BUILTIN):
        stem = name[len(BUILTIN):]
        path = PROFILES_DIR / (stem if stem.endswith(".csv") else f"{stem}.csv")
        # a built-in name is a file of workloads/profiles, never a path out of it
        if "/" in stem or "\\" in stem or not exists(path, key):
            known = ", ".join(BUILTIN + p.stem for p in profiles_in(PROFILES_DIR))
            raise ConfigError(f"{key}: no built-in profile {name!r}; known: {known}")
        return path
    path = base_dir / name
    # Fix: a missing profile file used to surface as the loader's bare "PATH: no such
    # profile file", without the key that names it; config errors name their key path.
    if not exists(path, key):
        raise ConfigError(f"{key}: no such profile file {str(path)!r}")
    return path
