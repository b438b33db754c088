"""A small in-memory Hugging Face Hub for tests (stdlib http.server on 127.0.0.1).

It speaks enough of the Hub protocol for the UNCHANGED clients, tested with
huggingface_hub 2.4.0 (over httpx2 2.16.2) and datasets 5.2.0, hf-xet 1.8.0 installed but disabled:
repo create/info, preupload, ndjson commits (regular + LFS files), the Git-LFS batch API with a
PUT upload target, tree / paths-info listings, validate-yaml, and resolve (GET/HEAD, Range) with
X-Repo-Commit, ETag, X-Linked-Etag/X-Linked-Size. Errors carry X-Error-Code so the clients raise
their typed errors. Clients must run with HF_HUB_DISABLE_XET=1 and HF_UPDATE_DOWNLOAD_COUNTS=0.

Usage: ``with HubServer(token="hf_x") as hub: hub.endpoint`` ->  "http://127.0.0.1:<port>".
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".parquet", ".safetensors", ".bin", ".arrow", ".npy", ".npz", ".pt", ".pth", ".zip", ".gz")
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
DATE = "2025-01-01T00:00:00.000Z"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def etag(self) -> str:  # what the Hub sends: sha256 for LFS files, the git blob id otherwise
        return self.sha256 if self.lfs else git_blob_oid(self.data)

    def entry(self, path: str) -> dict:
        info = {"type": "file", "path": path, "size": len(self.data),
                "oid": git_blob_oid(self.pointer() if self.lfs else self.data)}
        if self.lfs:
            info["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(self.pointer())}
        return info


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    commits: dict[str, dict[str, Blob]] = field(default_factory=dict)  # oid -> files
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        matches = [oid for oid in self.commits if oid.startswith(revision)] if len(revision) >= 7 else []
        return matches[0] if len(matches) == 1 else None


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None, extra=None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit
        self.extra = extra or {}


class HubServer:
    """Threaded fake Hub. ``token``: the only accepted token (None: no auth at all)."""

    def __init__(self, token: str | None = None):
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[str] = []  # "METHOD path" log, for tests and debugging
        self.lock = threading.RLock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------- test helpers
    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[(repo_type, repo_id)]
        return {p: b.data for p, b in repo.commits[repo.resolve(revision)].items()}

    def tamper(self, repo_id: str, path: str, data: bytes, repo_type: str = "dataset") -> None:
        """Replace a file's bytes in the head commit in place, as a corrupted mirror would serve them."""
        with self.lock:
            repo = self.repos[(repo_type, repo_id)]
            head = repo.commits[repo.branches["main"]]
            head[path] = Blob(data, head[path].lfs)

    # ------------------------------------------------------------- protocol
    def authorised(self, headers) -> bool:
        return self.token is None or headers.get("Authorization") == f"Bearer {self.token}"

    def repo(self, repo_type: str, repo_id: str, headers, write: bool = False) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or ((repo.private or write) and not self.authorised(headers)):
            raise HubError(404 if repo is None or not write else 401, "RepoNotFound", f"Repository {repo_id} not found")
        return repo

    def commit_files(self, repo: Repo, revision: str) -> tuple[str, dict[str, Blob]]:
        oid = repo.resolve(revision)
        if oid is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return oid, repo.commits[oid]

    def new_commit(self, repo: Repo, files: dict[str, Blob], summary: str, branch: str = "main") -> str:
        parent = repo.branches.get(branch, "")
        digest = hashlib.sha1(f"{parent}\n{summary}\n{len(repo.commits)}".encode())
        for path in sorted(files):
            digest.update(f"{path}:{files[path].etag}\n".encode())
        oid = digest.hexdigest()
        repo.commits[oid] = files
        repo.branches[branch] = oid
        return oid

    def create_repo(self, body: dict, headers) -> dict:
        if not self.authorised(headers):
            raise HubError(401, None, "Invalid credentials in Authorization header")
        repo_type = body.get("type") or "model"
        repo_id = f"{body['organization'] or 'user'}/{body['name']}"
        url = f"{self.endpoint}/{_prefix(repo_type)}{repo_id}"
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, None, "You already created this repo", extra={"url": url})
            repo = Repo(repo_id, repo_type, body.get("visibility") == "private" or bool(body.get("private")))
            self.new_commit(repo, {".gitattributes": Blob(GITATTRIBUTES, False)}, "initial commit")
            self.repos[(repo_type, repo_id)] = repo
        return {"url": url, "name": repo_id, "id": repo_id}

    def info(self, repo: Repo, revision: str, query: dict) -> dict:
        oid, files = self.commit_files(repo, revision)
        with_meta = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path in sorted(files):
            sib = {"rfilename": path}
            if with_meta:
                entry = files[path].entry(path)
                sib.update(size=entry["size"], blobId=entry["oid"], lfs=entry.get("lfs"))
            siblings.append(sib)
        card = {}
        if "README.md" in files:
            match = re.match(rb"^---\n(.*?)\n---", files["README.md"].data, re.S)
            card = yaml.safe_load(match.group(1)) if match else {}
        return {"_id": oid[:24], "id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": oid,
                "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                "tags": [], "createdAt": DATE, "lastModified": DATE, "cardData": card or None,
                "siblings": siblings, "usedStorage": sum(len(b.data) for b in files.values())}

    def preupload(self, repo: Repo, revision: str, body: dict) -> dict:
        _, files = self.commit_files(repo, revision)
        out = []
        for item in body["files"]:
            path, size = item["path"], item["size"]
            sample = base64.b64decode(item["sample"])
            lfs = path.endswith(LFS_SUFFIXES) or size > 10 * 2**20 or b"\0" in sample
            existing = files.get(path)
            remote_oid = None
            if existing is not None:
                remote_oid = existing.sha256 if existing.lfs else git_blob_oid(existing.data)
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": remote_oid})
        return {"files": out, "commitOid": repo.resolve(revision)}

    def commit(self, repo: Repo, revision: str, lines: list[dict]) -> dict:
        with self.lock:
            parent, files = self.commit_files(repo, revision)
            files = dict(files)
            header = {}
            for item in lines:
                key, value = item["key"], item["value"]
                if key == "header":
                    header = value
                    if value.get("parentCommit") and value["parentCommit"] != parent:
                        raise HubError(412, None, "A commit has happened since. Please refresh and try again.")
                elif key == "file":
                    files[value["path"]] = Blob(base64.b64decode(value["content"]), False)
                elif key == "lfsFile":
                    data = self.lfs_objects.get(value["oid"])
                    if data is None:
                        raise HubError(400, None, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                    files[value["path"]] = Blob(data, True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {value['path']}")
                elif key == "deletedFolder":
                    files = {p: b for p, b in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
                else:
                    raise HubError(400, None, f"unsupported commit operation {key!r}")
            branch = revision if revision in repo.branches else "main"
            oid = self.new_commit(repo, files, header.get("summary", ""), branch)
        url = f"{self.endpoint}/{_prefix(repo.repo_type)}{repo.repo_id}/commit/{oid}"
        return {"success": True, "commitOid": oid, "commitUrl": url, "hookOutput": "", "pullRequestUrl": None}

    def lfs_batch(self, body: dict) -> dict:
        objects = []
        for obj in body["objects"]:
            item = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.lfs_objects:
                item["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-upload/{obj['oid']}", "header": {}}}
            objects.append(item)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def tree(self, files: dict[str, Blob], prefix: str, recursive: bool) -> list[dict]:
        prefix = prefix.strip("/")
        base = prefix + "/" if prefix else ""
        if prefix and not any(p.startswith(base) for p in files):
            raise HubError(404, "EntryNotFound", f"{prefix} does not exist")
        entries: dict[str, dict] = {}
        for path in sorted(files):
            if not path.startswith(base):
                continue
            parts = path[len(base):].split("/")
            for depth in range(1, len(parts)):  # folders on the way
                folder = base + "/".join(parts[:depth])
                if depth == 1 or recursive:
                    entries.setdefault(folder, {"type": "directory", "path": folder, "size": 0,
                                                "oid": hashlib.sha1(folder.encode()).hexdigest()})
            if len(parts) == 1 or recursive:
                entries[path] = files[path].entry(path)
        return [entries[k] for k in sorted(entries)]

    def paths_info(self, files: dict[str, Blob], paths: list[str]) -> list[dict]:
        out = []
        folders = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        for path in paths:
            path = path.strip("/")
            if path in files:
                out.append(files[path].entry(path))
            elif path in folders:
                out.append({"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()})
        return out


def _prefix(repo_type: str) -> str:
    return "" if repo_type == "model" else f"{repo_type}s/"


def _make_handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self):
            self._dispatch()

        do_HEAD = do_POST = do_PUT = do_GET  # self.command tells them apart

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, ctype="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, obj, status: int = 200, headers: dict | None = None):
            self._send(status, json.dumps(obj).encode(), headers)

        def _dispatch(self) -> None:
            method = self.command
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            segs = [unquote(s) for s in url.path.strip("/").split("/")]
            body = self._body() if method in ("POST", "PUT") else b""
            with hub.lock:
                hub.requests.append(f"{method} {url.path}")
            try:
                self._route(method, segs, query, body)
            except HubError as err:
                headers = {"X-Error-Message": err.message}
                if err.code:
                    headers["X-Error-Code"] = err.code
                if err.commit:
                    headers["X-Repo-Commit"] = err.commit
                self._json({"error": err.message, **err.extra}, err.status, headers)
            except (KeyError, ValueError, IndexError) as err:
                self._json({"error": f"bad request: {err!r}"}, 400)

        def _route(self, method: str, segs: list[str], query: dict, body: bytes) -> None:
            if method == "POST" and segs == ["api", "repos", "create"]:
                return self._json(hub.create_repo(json.loads(body), self.headers))
            if method == "POST" and segs == ["api", "validate-yaml"]:
                return self._validate_yaml(json.loads(body))
            if method == "PUT" and segs[0] == "lfs-upload":
                data = body
                if hashlib.sha256(data).hexdigest() != segs[1]:
                    raise HubError(400, None, "uploaded content does not match its sha256")
                with hub.lock:
                    hub.lfs_objects[segs[1]] = data
                return self._send(200, b"")
            if segs[0] == "api" and len(segs) >= 4 and segs[1] in ("models", "datasets", "spaces"):
                return self._api(method, segs[1][:-1], "/".join(segs[2:4]), segs[4:], query, body)
            repo_type, rest = ("model", segs)
            if segs[0] in ("datasets", "spaces"):
                repo_type, rest = segs[0][:-1], segs[1:]
            if len(rest) >= 3 and rest[1].endswith(".git") and rest[2:] == ["info", "lfs", "objects", "batch"]:
                hub.repo(repo_type, f"{rest[0]}/{rest[1][:-4]}", self.headers, write=True)
                return self._send(200, json.dumps(hub.lfs_batch(json.loads(body))).encode(),
                                  ctype="application/vnd.git-lfs+json")
            if method in ("GET", "HEAD") and len(rest) >= 5 and rest[2] == "resolve":
                return self._resolve(hub.repo(repo_type, "/".join(rest[:2]), self.headers), rest[3], "/".join(rest[4:]))
            raise HubError(404, None, f"no route for {method} {'/'.join(segs)}")

        def _api(self, method, repo_type, repo_id, rest, query, body) -> None:
            write = method == "POST" and rest and rest[0] in ("preupload", "commit")
            repo = hub.repo(repo_type, repo_id, self.headers, write=bool(write))
            if method == "GET" and not rest:
                return self._json(hub.info(repo, "main", query))
            if method == "GET" and rest[0] == "revision":
                return self._json(hub.info(repo, "/".join(rest[1:]), query))
            if method == "POST" and rest[0] == "preupload":
                return self._json(hub.preupload(repo, rest[1], json.loads(body)))
            if method == "POST" and rest[0] == "commit":
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                return self._json(hub.commit(repo, rest[1], lines))
            if method == "GET" and rest[0] == "tree":
                _, files = hub.commit_files(repo, rest[1])
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                return self._json(hub.tree(files, "/".join(rest[2:]), recursive))
            if method == "POST" and rest[0] == "paths-info":
                _, files = hub.commit_files(repo, rest[1])
                form = parse_qs(body.decode())
                return self._json(hub.paths_info(files, form.get("paths", [])))
            raise HubError(404, None, f"no api route {rest}")

        def _validate_yaml(self, body: dict) -> None:
            match = re.match(r"^---\n(.*?)\n---", body.get("content", ""), re.S)
            try:
                meta = yaml.safe_load(match.group(1)) if match else {}
            except yaml.YAMLError as exc:
                return self._json({"errors": [{"message": f"invalid YAML: {exc}"}]}, 400)
            if meta is not None and not isinstance(meta, dict):
                return self._json({"errors": [{"message": "metadata must be a mapping"}]}, 400)
            return self._json({"errors": [], "warnings": []})

        def _resolve(self, repo: Repo, revision: str, path: str) -> None:
            oid, files = hub.commit_files(repo, revision)
            blob = files.get(path)
            if blob is None:
                raise HubError(404, "EntryNotFound", f"{path} does not exist on {revision}", commit=oid)
            headers = {"X-Repo-Commit": oid, "ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes"}
            if blob.lfs:
                headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data))})
            data, status = blob.data, 200
            ranged = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
            if ranged and self.command == "GET":
                start = int(ranged.group(1) or 0)
                end = min(int(ranged.group(2)) if ranged.group(2) else len(data) - 1, len(data) - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data, status = data[start:end + 1], 206
            self._send(status, data, headers, ctype="application/octet-stream")

    return Handler


__all__ = ["HubServer", "git_blob_oid"]
