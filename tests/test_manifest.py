"""File manifests: write, verify, detect truncation/tampering, reject escaping paths."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from wsbench.errors import DataError, IntegrityError
from wsbench.manifest import MANIFEST, safe_relpath, sha256_file, verify_manifest, write_manifest


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "zoo.yaml").write_text("name: tiny\n")
    (tmp_path / "weights" / "a.safetensors").write_bytes(os.urandom(3 * (1 << 20) + 17))  # > one chunk
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "junk").write_text("ignored")
    (tmp_path / ".hidden").write_text("ignored")
    return tmp_path


def test_sha256_streamed_matches_hashlib(folder):
    path = folder / "weights" / "a.safetensors"
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_and_verify(folder):
    manifest = write_manifest(folder)
    assert manifest["version"] == 1
    assert sorted(manifest["files"]) == ["weights/a.safetensors", "zoo.yaml"]
    assert manifest["files"]["zoo.yaml"] == {"sha256": sha256_file(folder / "zoo.yaml"), "bytes": 11}
    assert json.loads((folder / MANIFEST).read_text()) == manifest
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    verify_manifest(folder)
    verify_manifest(folder, files=["zoo.yaml"])
    (folder / "zoo.yaml").write_text("name: other\n")  # unlisted checks skip it
    verify_manifest(folder, files=["weights/a.safetensors"])


def test_explicit_file_list(folder):
    manifest = write_manifest(folder, files=["zoo.yaml"])
    assert list(manifest["files"]) == ["zoo.yaml"]
    with pytest.raises(IntegrityError, match="not listed"):
        verify_manifest(folder, files=["weights/a.safetensors"])


def test_missing_file(folder):
    write_manifest(folder)
    (folder / "zoo.yaml").unlink()
    with pytest.raises(IntegrityError, match="zoo.yaml is missing"):
        verify_manifest(folder)


def test_truncated_file(folder):
    write_manifest(folder)
    path = folder / "weights" / "a.safetensors"
    with open(path, "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(IntegrityError, match=r"a\.safetensors has 100 bytes.*truncated"):
        verify_manifest(folder)


def test_tampered_file_same_size(folder):
    write_manifest(folder)
    path = folder / "weights" / "a.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"a\.safetensors does not match its sha256"):
        verify_manifest(folder)


def test_missing_or_bad_manifest(folder):
    with pytest.raises(DataError, match="no manifest"):
        verify_manifest(folder)
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match="not a valid manifest"):
        verify_manifest(folder)
    (folder / MANIFEST).write_text(json.dumps({"version": 99, "files": {}}))
    with pytest.raises(DataError, match="version"):
        verify_manifest(folder)


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/passwd", "weights/../../x", "..", "C:/x", ""])
def test_safe_relpath_rejects_escapes(folder, rel):
    with pytest.raises(DataError):
        safe_relpath(folder, rel)


def test_safe_relpath_accepts_inside(folder):
    assert safe_relpath(folder, "weights/a.safetensors") == folder.resolve() / "weights" / "a.safetensors"
    assert safe_relpath(folder, "new/file.bin") == folder.resolve() / "new" / "file.bin"


def test_symlink_escape_rejected(folder, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (folder / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DataError, match="escapes"):
        safe_relpath(folder, "link/secret")


def test_manifest_with_escaping_entry_rejected(folder):
    (folder / MANIFEST).write_text(json.dumps({"version": 1, "files": {"../evil": {"sha256": "0", "bytes": 1}}}))
    with pytest.raises(DataError, match="escapes"):
        verify_manifest(folder)
