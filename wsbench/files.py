"""Writing files so that a reader never sees half of one: a temporary name in the same folder, fsync,
then a rename over the target (the temporary file is removed when anything fails)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` (str: UTF-8) to `path`, creating its folder; OSError propagates, nothing half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
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
