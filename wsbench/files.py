"""Writing files so that a reader never sees half of one: a temporary name in the same folder, fsync,
then a rename over the target (the temporary file is removed when anything fails; what a killed
writer leaves is swept by the next writer). Output folders are checked before work starts."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from .errors import ConfigError


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` (str: UTF-8) to `path`, creating its folder; OSError propagates, nothing half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_report(json_path: str | os.PathLike, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """A measurement report: `json_path` (the figures) and the same name with `.md` (for people)."""
    json_path = Path(json_path)
    return (write_atomic(json_path, json.dumps(data, indent=1, default=str) + "\n"),
            write_atomic(json_path.with_suffix(".md"), markdown))


def print_and_write_report(out: str | None, data: dict[str, Any], markdown: str) -> int:
    """A script's last act: the report's markdown to stdout and, with `out`, <out>.json and <out>.md; 0."""
    print(markdown)
    if out:
        write_report(f"{out}.json", data, markdown)
    return 0


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?:tmp|staging|download|old)-(?P<pid>\d+)(?:[-.].*)?")


def temp_name(path: Path, kind: str = "tmp") -> Path:
    """The hidden sibling a writer uses while it works: `.NAME.KIND-PID` (sweep_leftovers knows it)."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_leftovers(folder: str | os.PathLike, names: set[str] | None = None) -> list[Path]:
    """Remove what writers killed mid-write (SIGKILL, power loss) left in `folder`: hidden
    `.NAME.tmp-PID`, `.NAME.staging-PID-*`, `.NAME.download-PID-*` and `.NAME.old-PID` entries whose process is gone (only
    those of `names` when given: in a folder that is not the suite's own). Another process's work in
    progress (its PID alive) is left alone. Returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _LEFTOVER.fullmatch(entry.name)
        if not m or (names is not None and m["name"] not in names) or int(m["pid"]) == os.getpid() \
                or _alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def check_folder_path(path: str | os.PathLike, option: str) -> None:
    """A folder that is there or can be made: no file in the way, no unwritable parent; else one
    ConfigError line naming `option`."""
    path = Path(path)
    for p in [path, *path.parents]:
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"{option} {path}: {p} is a file, not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise ConfigError(f"{option} {path}: {p} is not writable")
            return
