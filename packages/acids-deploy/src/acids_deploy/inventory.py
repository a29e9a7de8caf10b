"""The inventory: a TOML file of boards, with defaults and groups.

.. code-block:: toml

    [defaults]
    user = "pi"
    identity_file = "~/.ssh/acids_ed25519"   # relative paths are relative to this file
    known_hosts = "known_hosts"              # pinned host keys; an unknown key is refused
    install_dir = "/opt/acids"

    [boards.kitchen-pi]
    host = "192.168.1.20"
    profile = "rpi-bookworm"
    groups = ["studio"]

Every key is checked: a typo is a usage error (exit 2) naming the file and the key.
"""

from __future__ import annotations

import os
import posixpath
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from acids_core.errors import MissingInput, UsageError
from acids_deploy.profiles import Profile, get_profile

ENV_INVENTORY = "ACIDS_DEPLOY_INVENTORY"


@dataclass(frozen=True)
class Board:
    """One board of the inventory (all paths already resolved)."""

    name: str
    host: str
    profile: str
    port: int = 22
    user: str = "root"
    identity_file: str | None = None
    known_hosts: str | None = None
    install_dir: str = "/opt/acids"
    python: str = "python3"
    groups: tuple[str, ...] = ()
    service: str | None = None  # systemd unit restarted after a switch; None: no service
    trtexec: str | None = None  # the board's trtexec, when not where the profile says
    connect_timeout: float = 10.0
    command_timeout: float = 300.0
    retries: int = 3
    retry_delay: float = 2.0
    keep_releases: int = 3
    smoke_frames: int = 8192

    def get_profile(self) -> Profile:
        return get_profile(self.profile)

    @property
    def address(self) -> str:
        """``user@host:port`` for messages."""
        return f"{self.user}@{self.host}:{self.port}"


_FIELDS = {f.name: f for f in fields(Board)}
_PATH_KEYS = ("identity_file", "known_hosts")
_REQUIRED = ("host", "profile")


@dataclass(frozen=True)
class Inventory:
    """The boards of one inventory file."""

    path: Path
    boards: dict[str, Board] = field(default_factory=dict)

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for b in self.boards.values():
            for g in b.groups:
                out.setdefault(g, []).append(b.name)
        return out

    def select(self, targets: tuple[str, ...] | list[str]) -> list[Board]:
        """Boards named by ``targets`` (board names, group names, or ``all``), in inventory order."""
        if not targets:
            raise UsageError("no --target given (a board, a group, or 'all')")
        groups = self.groups()
        wanted: set[str] = set()
        for t in targets:
            for name in (s.strip() for s in t.split(",")):
                if not name:
                    continue
                if name == "all":
                    wanted.update(self.boards)
                elif name in self.boards:
                    wanted.add(name)
                elif name in groups:
                    wanted.update(groups[name])
                else:
                    known = ", ".join(list(self.boards) + [f"@{g}" for g in groups]) or "none"
                    raise UsageError(f"{self.path}: no board or group {name!r} (known: {known})")
        return [b for n, b in self.boards.items() if n in wanted]


def _check_value(where: str, key: str, value: Any) -> Any:
    f = _FIELDS[key]
    tp = f.type if isinstance(f.type, str) else str(f.type)
    if key == "groups":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{where}: 'groups' must be a list of strings")
        return tuple(value)
    if tp.startswith("int"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"{where}: {key!r} must be an integer, got {value!r}")
    elif tp.startswith("float"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UsageError(f"{where}: {key!r} must be a number, got {value!r}")
        value = float(value)
    elif not isinstance(value, str):
        raise UsageError(f"{where}: {key!r} must be a string, got {value!r}")
    return value


def _resolve_path(base: Path, value: str) -> str:
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p).resolve())


def parse_inventory(data: dict[str, Any], path: Path) -> Inventory:
    """Build an :class:`Inventory` from parsed TOML (``path`` names it in errors and anchors paths)."""
    unknown_top = set(data) - {"defaults", "boards"}
    if unknown_top:
        raise UsageError(
            f"{path}: unknown section(s) {sorted(unknown_top)} (expected [defaults], [boards.*])"
        )
    defaults = data.get("defaults", {})
    boards_raw = data.get("boards", {})
    if not isinstance(defaults, dict) or not isinstance(boards_raw, dict):
        raise UsageError(f"{path}: [defaults] and [boards.NAME] must be tables")
    base = path.parent
    boards: dict[str, Board] = {}
    for name, raw in boards_raw.items():
        where = f"{path}: [boards.{name}]"
        if not isinstance(raw, dict):
            raise UsageError(f"{where} must be a table")
        merged = {**defaults, **raw}
        values: dict[str, Any] = {"name": name}
        for key, value in merged.items():
            if key not in _FIELDS or key == "name":
                known = ", ".join(k for k in _FIELDS if k != "name")
                raise UsageError(f"{where}: unknown key {key!r} (known: {known})")
            value = _check_value(where, key, value)
            if key in _PATH_KEYS:
                value = _resolve_path(base, value)
            values[key] = value
        for key in _REQUIRED:
            if key not in values:
                raise UsageError(f"{where}: missing {key!r}")
        get_profile(values["profile"])  # unknown profile: usage error naming the known ones
        install_dir = values.get("install_dir", "/opt/acids")
        if not posixpath.isabs(install_dir):
            raise UsageError(f"{where}: install_dir must be an absolute path, got {install_dir!r}")
        values["install_dir"] = posixpath.normpath(install_dir)
        if values.get("retries", 1) < 1:
            raise UsageError(f"{where}: retries must be at least 1")
        boards[name] = Board(**values)
    return Inventory(path=path, boards=boards)


def load_inventory(path: str | os.PathLike[str] | None) -> Inventory:
    """Read the inventory at ``path`` (default: $ACIDS_DEPLOY_INVENTORY, then ./boards.toml)."""
    p = Path(path or os.environ.get(ENV_INVENTORY) or "boards.toml")
    if not p.is_file():
        raise MissingInput(f"{p}: no inventory file (pass --inventory or set {ENV_INVENTORY})")
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{p}: not valid TOML: {e}") from None
    return parse_inventory(data, p.resolve())
