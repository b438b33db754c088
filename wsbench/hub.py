"""Publishing to and fetching from the Hugging Face Hub: result records and model zoos.

Both are *dataset* repos. Results: ``records.jsonl`` (the exact records), ``data/records.parquet``
(the flat table ``datasets.load_dataset(repo_id)`` reads) and a card. Zoos: the zoo folder as
listed in its manifest, plus a card whose ``configs`` make ``load_dataset`` read members.parquet.

The endpoint comes from the argument or ``HF_ENDPOINT``; the token from the argument,
``HF_TOKEN`` or the token stored by ``hf auth login``. Uploads use the plain HTTP/LFS protocol
(Xet disabled). Every failure ends in one WsbenchError naming the repo and endpoint, never
showing the token; local files are not touched by a failed push or pull.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

os.environ["HF_HUB_DISABLE_XET"] = "1"  # must precede the first import of huggingface_hub
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")

import huggingface_hub  # noqa: E402
import yaml  # noqa: E402
from huggingface_hub import CommitOperationAdd, HfApi  # noqa: E402
from huggingface_hub import constants as hf_constants  # noqa: E402
from huggingface_hub import errors as hf_errors  # noqa: E402

from .errors import ConfigError, DataError, IntegrityError, WsbenchError  # noqa: E402
from .files import sweep_leftovers  # noqa: E402
from .manifest import MANIFEST, read_manifest, verify_manifest  # noqa: E402
from .results import (ResultRecord, append_records_counted, parse_record_lines, read_records,  # noqa: E402
                      records_frame)

hf_constants.HF_HUB_DISABLE_XET = True  # in case huggingface_hub was imported before this module

try:  # the HTTP client of huggingface_hub 2.x; its transport errors are not OSErrors
    from httpx2 import HTTPError as _ClientHTTPError  # noqa: E402
except ImportError:  # pragma: no cover - older huggingface_hub use httpx or requests
    _ClientHTTPError = OSError
_NETWORK_ERRORS = (OSError, ValueError, RuntimeError, _ClientHTTPError)

RECORDS_JSONL = "records.jsonl"
RECORDS_PARQUET = "data/records.parquet"
MEMBERS_PARQUET = "members.parquet"
TOKEN_HELP = (
    "set HF_TOKEN to a Hugging Face access token with write permission "
    "(https://huggingface.co/settings/tokens), or run `hf auth login`"
)


def resolve_endpoint(endpoint: str | None = None) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT).rstrip("/")


def resolve_token(token: str | None = None, *, required: bool) -> str | bool:
    """The token to use, or False (anonymous) when none is set and none is required."""
    if not token:
        token = os.environ.get("HF_TOKEN") or None
    if not token:
        try:
            token = huggingface_hub.get_token()
        except Exception:  # a broken token store or OIDC setup: treat as "no token"
            token = None
    if token:
        return token
    if required:
        raise WsbenchError(f"pushing to the Hugging Face Hub needs a token: {TOKEN_HELP}")
    return False


def _scrub(text: str, token: str | bool) -> str:
    return text.replace(token, "***") if isinstance(token, str) and token else text


@contextlib.contextmanager
def _hub_errors(action: str, repo_id: str, endpoint: str, token: str | bool) -> Iterator[None]:
    """Turn client/network errors into one WsbenchError naming repo and endpoint (no token)."""
    where = f"dataset repo {repo_id!r} on {endpoint}"
    try:
        yield
    except WsbenchError:
        raise
    except hf_errors.RepositoryNotFoundError:
        hint = "" if token else " (set HF_TOKEN if it is private)"
        raise WsbenchError(f"{action}: {where} was not found or is not accessible{hint}") from None
    except hf_errors.RevisionNotFoundError:
        raise WsbenchError(f"{action}: {where} has no such revision") from None
    except hf_errors.RemoteEntryNotFoundError as exc:
        msg = _scrub(str(exc).splitlines()[-1] if str(exc) else "missing file", token)
        raise WsbenchError(f"{action}: a file is missing in {where}: {msg}") from None
    except hf_errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if status in (401, 403):
            msg = f"{action}: {endpoint} refused the credentials for {where} (HTTP {status}); {TOKEN_HELP}"
        else:
            detail = _scrub(getattr(exc, "server_message", None) or str(exc).split("\n")[0], token)
            msg = f"{action}: {where} failed with HTTP {status}: {detail}"
        raise WsbenchError(msg) from None
    except hf_errors.OfflineModeIsEnabled:
        raise WsbenchError(f"{action}: {where} needs the network but HF_HUB_OFFLINE is set") from None
    except _NETWORK_ERRORS as exc:  # connection refused, DNS, timeouts, malformed replies
        root, seen = exc, {id(exc)}  # the innermost cause says what went wrong (e.g. connection refused)
        while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
            root = nxt
            seen.add(id(nxt))
        detail = _scrub(f"{type(root).__name__}: {root}", token)
        raise WsbenchError(f"{action}: cannot reach or use {where}: {detail}") from None


def _api(endpoint: str, token: str | bool) -> HfApi:
    return HfApi(endpoint=endpoint, token=token, library_name="wsbench")


# ----------------------------------------------------------------------------- dataset cards

RECORD_COLUMNS = {
    "task": "benchmark task (registry name): reconstruction, property prediction, transfer, ...",
    "task_version": "version of the task's scoring; numbers are comparable only within one version",
    "zoo": "model zoo (registry name) the networks came from",
    "zoo_version": "version of the zoo card the zoo was built from",
    "split": "zoo split the metrics were measured on",
    "method": "weight-space method (registry name)",
    "method_config": "the method's full configuration, as a JSON string",
    "preset": "named configuration preset (e.g. paper, quick), empty when none",
    "seed": "random seed of the run",
    "status": "'ok', or 'not_applicable' when the method cannot do the task",
    "reason": "why the run is not applicable (empty when status is ok)",
    "n_train": "number of networks (or examples) the method was trained on",
    "n_eval": "number of networks (or examples) it was evaluated on",
    "n_params": "trainable parameters of the method (the representation size for reconstructors)",
    "wall_s": "wall-clock seconds of the run",
    "device": "where it ran, e.g. 'cpu (2 cores)' or the GPU name",
    "git_commit": "wsbench source commit ('+dirty' when it had local changes)",
    "date": "UTC time the record was made (ISO 8601)",
    "command": "the command line that produced the record",
    "extra": "further details as a JSON string (per-layer errors, member id, variant label, ...)",
    "record_id": "first 16 hex digits of the sha256 of the record's other fields (canonical JSON)",
}
PREFIX_COLUMNS = {
    "metric.": "a metric of the task (NaN where the task does not report it)",
    "higher_is_better.": "whether a larger value of that metric is better",
    "version.": "version of that package (wsbench, torch, python) in the run",
}


def _yaml_header(meta: dict) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def results_card(repo_id: str, records: list[ResultRecord], columns: list[str], parquet: str,
                 leaderboard_url: str | None = None) -> str:
    tasks = sorted({r.task for r in records})
    methods = sorted({r.method for r in records})
    header = _yaml_header({
        "pretty_name": f"wsbench results ({repo_id})",
        "tags": ["wsbench", "weight-space-learning", "benchmark-results"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": parquet}]}],
    })
    board = f"[leaderboards/README.md]({leaderboard_url})" if leaderboard_url else "`leaderboards/README.md`"
    lines = [
        f"# wsbench results: {repo_id}", "",
        f"{len(records)} result records of wsbench, a benchmark of "
        "weight-space learning methods (NeRN, DWSNet, SNE and baselines) on model zoos.",
        f"Tasks: {', '.join(tasks)}. Methods: {', '.join(methods)}.", "",
        f"The leaderboard generated from these records is {board} of the wsbench project "
        "(`run_bench.py leaderboard`); it is derived from the records, never edited by hand.", "",
        "## Files", "",
        f"- `{RECORDS_JSONL}`: the records exactly as wsbench stores them, one JSON object a line, sorted by "
        "`record_id`; `run_bench.py` / `wsbench.hub.pull_results` merge it into a local store.",
        f"- `{parquet}`: the same records as one flat table: `datasets.load_dataset(\"{repo_id}\")`.", "",
        "## Columns", "",
    ]
    for col in columns:
        doc = RECORD_COLUMNS.get(col)
        if doc is None:
            prefix = next((p for p in PREFIX_COLUMNS if col.startswith(p)), None)
            doc = PREFIX_COLUMNS[prefix] if prefix else "see the wsbench documentation"
        lines.append(f"- `{col}`: {doc}")
    return header + "\n" + "\n".join(lines) + "\n"


def zoo_card(repo_id: str, meta: dict, members: str) -> str:
    meta = meta if isinstance(meta, dict) else {}
    name, version = str(meta.get("name", repo_id)), str(meta.get("version", "?"))
    header = _yaml_header({
        "pretty_name": f"wsbench model zoo {name} v{version}",
        "tags": ["wsbench", "weight-space-learning", "model-zoo"],
        "configs": [{"config_name": "default", "data_files": [{"split": "members", "path": members}]}],
    })
    lines = [f"# Model zoo `{name}`, version {version}", ""]
    if meta.get("description"):
        lines += [str(meta["description"]).strip(), ""]
    lines += [
        "A wsbench model zoo: many trained networks whose weights are the "
        "input of weight-space learning methods.", "",
        f"- `{members}`: one row per network (id, split, architecture group, row in the weight files, "
        f"hyper-parameters, metrics); `datasets.load_dataset(\"{repo_id}\", split=\"members\")` reads it.",
        "- `weights/<group>.safetensors`: one stacked tensor `[n_members, ...]` per parameter and architecture "
        "group; a member's weights are row `row` of its group.",
        "- `zoo.yaml`: the zoo card (recipe, hyper-parameter grid, seeds, splits) it was built from.",
        f"- `{MANIFEST}`: sha256 and size of every file; `wsbench.hub.download_zoo` checks them.", "",
    ]
    for key, title in (("license", "Licence"), ("licence", "Licence"), ("provenance", "Provenance"),
                       ("citation", "Citation"), ("nondeterminism", "Reproducibility")):
        if meta.get(key):
            lines += [f"## {title}", "", str(meta[key]).strip(), ""]
    return header + "\n" + "\n".join(lines)


# ----------------------------------------------------------------------------- results


def push_results(
    repo_id: str,
    results_dir: str | os.PathLike,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    private: bool = False,
    leaderboard_url: str | None = None,
) -> tuple[str, int]:
    """Publish the union of the repo's records and every local record (by record id: a remote record
    is never dropped) as records.jsonl + data/records.parquet + card, in ONE commit on top of the
    commit read (a concurrent push makes this one fail, not vanish).

    Returns (commit URL, records new on the Hub). The repo is created when missing."""
    endpoint = resolve_endpoint(endpoint)
    token = resolve_token(token, required=True)
    local = read_records(results_dir)
    if not local:
        raise DataError(f"no result records in {results_dir}: nothing to push")
    api = _api(endpoint, token)
    with _hub_errors("push_results", repo_id, endpoint, token):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        remote, sha = _remote_records(api, repo_id, endpoint, token, None)
    merged = {r.record_id: r for r in remote}
    added = sum(r.record_id not in merged for r in local)
    merged.update({r.record_id: r for r in local if r.record_id not in merged})
    records = sorted(merged.values(), key=lambda r: r.record_id)
    jsonl = "".join(r.to_json() + "\n" for r in records).encode("utf-8")
    frame = records_frame(records)
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    card = results_card(repo_id, records, list(frame.columns), RECORDS_PARQUET, leaderboard_url)
    ops = [
        CommitOperationAdd(RECORDS_JSONL, jsonl),
        CommitOperationAdd(RECORDS_PARQUET, buf.getvalue()),
        CommitOperationAdd("README.md", card.encode("utf-8")),
    ]
    with _hub_errors("push_results", repo_id, endpoint, token):
        info = api.create_commit(repo_id, ops, repo_type="dataset", parent_commit=sha,
                                 commit_message=f"wsbench: {len(records)} result records ({added} new)")
    return info.commit_url, added


def _remote_records(api: HfApi, repo_id: str, endpoint: str, token: str | bool,
                    revision: str | None) -> tuple[list[ResultRecord], str | None]:
    """(valid records of the repo's records.jsonl, the commit read); ([], sha) when it has none yet.
    Call inside _hub_errors."""
    # repo_info first: fails fast (no retries) when the endpoint is down, and pins the commit
    info = api.repo_info(repo_id, repo_type="dataset", revision=revision)
    sha = info.sha
    names = {s.rfilename for s in (info.siblings or [])}
    if RECORDS_JSONL not in names:
        return [], sha
    records: list[ResultRecord] = []
    with tempfile.TemporaryDirectory(prefix="wsbench-hub-") as tmp:
        path = huggingface_hub.hf_hub_download(repo_id, RECORDS_JSONL, repo_type="dataset", revision=sha or revision,
                                               endpoint=endpoint, token=token, local_dir=tmp)
        for lineno, record in parse_record_lines(path):
            if isinstance(record, ConfigError):
                warnings.warn(f"{repo_id}/{RECORDS_JSONL}:{lineno}: skipped corrupted record ({record})", stacklevel=2)
            else:
                records.append(record)
    return records, sha


def pull_results(
    repo_id: str,
    results_dir: str | os.PathLike,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    revision: str | None = None,
) -> int:
    """Merge the repo's records.jsonl into the local store; returns how many records were new."""
    endpoint = resolve_endpoint(endpoint)
    token = resolve_token(token, required=False)
    with _hub_errors("pull_results", repo_id, endpoint, token):
        records, _ = _remote_records(_api(endpoint, token), repo_id, endpoint, token, revision)
    _, added = append_records_counted(results_dir, records)
    return added


# ----------------------------------------------------------------------------- zoos


def push_zoo(
    zoo_dir: str | os.PathLike,
    repo_id: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    private: bool = False,
) -> str:
    """Verify the zoo's manifest, then upload its files + manifest + a card in ONE commit."""
    zoo_dir = Path(zoo_dir)
    verify_manifest(zoo_dir)
    files = sorted(read_manifest(zoo_dir)["files"])
    if MEMBERS_PARQUET not in files:
        raise DataError(f"{zoo_dir} is not a zoo folder: its manifest does not list {MEMBERS_PARQUET}")
    endpoint = resolve_endpoint(endpoint)
    token = resolve_token(token, required=True)
    meta: dict = {}
    card_file = zoo_dir / "zoo.yaml"
    if card_file.is_file():
        try:
            meta = yaml.safe_load(card_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise DataError(f"{card_file} is not valid YAML: {exc}") from None
    ops = [CommitOperationAdd(rel, str(zoo_dir / rel)) for rel in files]
    ops.append(CommitOperationAdd(MANIFEST, str(zoo_dir / MANIFEST)))
    if "README.md" not in files:  # a README listed in the manifest is uploaded as it is
        ops.append(CommitOperationAdd("README.md", zoo_card(repo_id, meta, MEMBERS_PARQUET).encode("utf-8")))
    api = _api(endpoint, token)
    name = meta.get("name", zoo_dir.name) if isinstance(meta, dict) else zoo_dir.name
    with _hub_errors("push_zoo", repo_id, endpoint, token):
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.create_commit(repo_id, ops, repo_type="dataset", commit_message=f"wsbench zoo {name}")
    return info.commit_url


def download_zoo(
    repo_id: str,
    dest_dir: str | os.PathLike,
    *,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Download a zoo repo into dest_dir, verified against its manifest before it appears there.

    The files land in a temporary folder beside dest_dir; only a complete, verified download is
    renamed into place, so a failed or tampered download leaves nothing behind.
    """
    dest = Path(dest_dir)
    if dest.exists() and not overwrite:
        raise DataError(f"{dest} already exists; remove it or pass overwrite=True")
    endpoint = resolve_endpoint(endpoint)
    token = resolve_token(token, required=False)
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]  # removed again on failure
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        sweep_leftovers(dest.parent, names={dest.name})  # a download killed before its rename
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.download-{os.getpid()}-", dir=dest.parent))
    except OSError as exc:
        raise WsbenchError(f"download_zoo: cannot create a folder beside {dest}: {exc.strerror or exc}") from None
    ok = False
    try:
        with _hub_errors("download_zoo", repo_id, endpoint, token):
            huggingface_hub.snapshot_download(
                repo_id, repo_type="dataset", revision=revision, endpoint=endpoint, token=token, local_dir=tmp
            )
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's local-dir bookkeeping
        (tmp / ".gitattributes").unlink(missing_ok=True)
        try:
            verify_manifest(tmp)
        except DataError as exc:
            where = f"{repo_id}" + (f"@{revision}" if revision else "") + f" from {endpoint}"
            cls = IntegrityError if isinstance(exc, IntegrityError) else DataError
            raise cls(f"download of {where} failed verification: {str(exc).replace(str(tmp) + os.sep, '')}") from None
        try:
            if dest.exists():  # overwrite: move the old folder aside, put the new one in, then delete
                old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-{os.getpid()}-", dir=dest.parent))
                os.replace(dest, old / "zoo")
                os.replace(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, dest)
        except OSError as exc:
            raise WsbenchError(f"download_zoo: cannot move the verified download into {dest}: {exc}") from None
        ok = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            for folder in created:  # innermost first; stops at the first folder that is not empty
                try:
                    folder.rmdir()
                except OSError:
                    break
    return dest
