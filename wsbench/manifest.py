"""File manifests: sha256 and size of every file of a folder (zoo folders, Hub downloads).

Format of ``manifest.json``::

    {"version": 1, "files": {"weights/resnet20.safetensors": {"sha256": "...", "bytes": 123}}}

Paths are relative, POSIX-style, and never leave the folder (see :func:`safe_relpath`).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from .errors import DataError, IntegrityError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def safe_relpath(root: str | os.PathLike, rel: str | os.PathLike) -> Path:
    """``root / rel`` after checking rel is relative and stays inside root; else DataError."""
    text = os.fspath(rel)
    pure = PurePosixPath(text.replace("\\", "/"))
    if "\0" in text:
        raise DataError(f"path {text!r} in {root} holds a NUL byte")
    if not text or pure.is_absolute() or (len(text) > 1 and text[1] == ":"):
        raise DataError(f"path {text!r} must be relative to {root}")
    if any(part == ".." for part in pure.parts):
        raise DataError(f"path {text!r} escapes {root}")
    root_path = Path(root).resolve()
    full = (root_path / Path(*pure.parts)).resolve()
    if full != root_path and root_path not in full.parents:  # e.g. a symlink pointing outside
        raise DataError(f"path {text!r} escapes {root}")
    return root_path / Path(*pure.parts)


def _default_files(root: Path) -> list[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if rel != MANIFEST:
                files.append(rel)
    return sorted(files)


def write_manifest(root: str | os.PathLike, files: Iterable[str] | None = None) -> dict[str, Any]:
    """Hash files (default: every file except manifest.json and dot-files) into root/manifest.json."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"cannot write a manifest: {root} is not a folder")
    names = _default_files(root) if files is None else sorted({PurePosixPath(f).as_posix() for f in files})
    entries = {}
    for rel in names:
        path = safe_relpath(root, rel)
        if not path.is_file():
            raise DataError(f"cannot write a manifest: {path} is not a file")
        entries[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {"version": MANIFEST_VERSION, "files": entries}
    _atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The parsed manifest of root; DataError if it is missing or malformed."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is missing: the folder has no manifest") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a valid manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION:
        raise DataError(f"{path}: unsupported manifest version (expected {MANIFEST_VERSION})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) and isinstance(v.get("bytes"), int)
        for v in files.values()
    ):
        raise DataError(f"{path}: 'files' must map paths to {{sha256, bytes}}")
    return manifest


def verify_manifest(root: str | os.PathLike, files: Iterable[str] | None = None) -> None:
    """Check files (default: all in the manifest) exist with the recorded size and sha256.

    Raises IntegrityError naming the first bad file; DataError for a bad manifest or path.
    """
    root = Path(root)
    entries = read_manifest(root)["files"]
    names = sorted(entries) if files is None else [PurePosixPath(f).as_posix() for f in files]
    for rel in names:
        if rel not in entries:
            raise IntegrityError(f"{root / rel} is not listed in {root / MANIFEST}")
        path = safe_relpath(root, rel)
        entry = entries[rel]
        if not path.is_file():
            raise IntegrityError(f"{path} is missing (listed in {root / MANIFEST})")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise IntegrityError(
                f"{path} has {size} bytes, the manifest says {entry['bytes']} (truncated or replaced)"
            )
        if sha256_file(path) != entry["sha256"]:
            raise IntegrityError(f"{path} does not match its sha256 in {root / MANIFEST} (corrupted or tampered)")


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
