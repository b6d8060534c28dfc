"""Where labs are recorded on the host: one directory per lab, per user."""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import BadRequest, NotFound

__all__ = ["LabRecord", "state_root", "lab_dir", "read_record", "all_records", "valid_name",
           "pid_alive", "DEFAULT_LAB"]

DEFAULT_LAB = "kubenet"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


def state_root() -> Path:
    """``$XDG_RUNTIME_DIR/kubenet`` when this user owns that directory, else /tmp/kubenet-UID."""
    uid = os.getuid()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        try:
            if os.stat(xdg).st_uid == uid:
                root = Path(xdg) / "kubenet"
                root.mkdir(mode=0o700, exist_ok=True)
                return root
        except OSError:
            pass
    root = Path(f"/tmp/kubenet-{uid}")
    root.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(root)
    if info.st_uid != uid or not stat.S_ISDIR(info.st_mode) or info.st_mode & 0o077:
        raise BadRequest(f"error: {root} is not a private directory of this user; remove it")
    return root


def valid_name(name: str) -> str:
    if not _NAME.match(name):
        raise BadRequest(f'error: invalid lab name "{name}": use lower case letters, digits '
                         "and '-', at most 40 characters")
    return name


def lab_dir(name: str) -> Path:
    return state_root() / valid_name(name)


@dataclass
class LabRecord:
    name: str
    tier: str
    anchor_pid: int
    socket: str
    created: float
    owner_pid: int | None = None  # a Python process the lab dies with (None: `kubenet up`)

    def save(self) -> None:
        path = Path(self.socket).parent / "lab.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie waiting for its parent to reap it counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def read_record(name: str) -> LabRecord:
    path = lab_dir(name) / "lab.json"
    try:
        record = LabRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        raise NotFound(f'error: lab "{name}" not found (start one with: kubenet up'
                       f'{"" if name == DEFAULT_LAB else " --lab " + name})') from None
    if not pid_alive(record.anchor_pid):
        raise NotFound(f'error: lab "{name}" is not running (start one with: kubenet up'
                       f'{"" if name == DEFAULT_LAB else " --lab " + name})')
    return record


def all_records() -> list[LabRecord]:
    out = []
    for child in sorted(state_root().iterdir()):
        try:
            out.append(read_record(child.name))
        except (NotFound, BadRequest):
            continue
    return out
