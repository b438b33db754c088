"""Hub publishing against a local fake Hub (tests/hub_server.py) with the unchanged clients."""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_UPDATE_DOWNLOAD_COUNTS"] = "0"

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from wsbench import hub  # noqa: E402
from wsbench.errors import IntegrityError, WsbenchError  # noqa: E402
from wsbench.manifest import write_manifest  # noqa: E402
from wsbench.results import ResultRecord, append_records, read_records  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

TOKEN = "hf_TestSecretToken1234567890"
# raised inside huggingface_hub's own LFS upload code, not ours
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture(scope="module")
def server():
    with HubServer(token=TOKEN) as srv:
        yield srv


@pytest.fixture()
def hf_env(server, tmp_path, monkeypatch):
    """Point both clients at the local server, with caches in tmp_path and online mode."""
    import datasets
    import datasets.config as dconfig
    import huggingface_hub.constants as hconst
    from huggingface_hub import HfFileSystem

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setattr(hconst, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(hconst, "HUGGINGFACE_CO_URL_TEMPLATE", server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hconst, "HF_URL_HOSTS", hconst.HF_URL_HOSTS | {"127.0.0.1"})
    monkeypatch.setattr(hconst, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hconst, "HF_HUB_CACHE", str(tmp_path / "hub_cache"))
    monkeypatch.setattr(hconst, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    monkeypatch.setattr(hconst, "HF_STORED_TOKENS_PATH", str(tmp_path / "no_tokens"))
    monkeypatch.setattr(dconfig, "HF_ENDPOINT", server.endpoint)
    monkeypatch.setattr(dconfig, "HUB_DATASETS_URL", server.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}")
    monkeypatch.setattr(dconfig, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(dconfig, "USE_PARQUET_EXPORT", False)
    monkeypatch.setattr(dconfig, "HF_UPDATE_DOWNLOAD_COUNTS", False)  # in case datasets was imported earlier
    monkeypatch.setattr(hconst, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(dconfig, "HF_DATASETS_CACHE", tmp_path / "ds_cache")
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host, *args, **kwargs):  # any attempt to leave 127.0.0.1 fails loudly and fast
        if host not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"test tried to reach {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    HfFileSystem.clear_instance_cache()
    yield datasets
    HfFileSystem.clear_instance_cache()


def make_record(seed: int, task: str = "reconstruction") -> ResultRecord:
    return ResultRecord.create(
        task=task, task_version=1, zoo="tiny_zoo", zoo_version="1", split="test", method="nern",
        method_config={"hidden": 8}, preset="quick", seed=seed, metrics={"acc": 0.5 + seed / 100},
        higher_is_better={"acc": True}, status="ok", n_train=3, n_eval=2, n_params=100, wall_s=0.1,
        device="cpu (2 cores)", versions={"wsbench": "0.1.0", "torch": "x", "python": "y"}, git_commit=None,
        date="2025-01-01T00:00:00+00:00", command="pytest",
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_results_then_load_dataset(hf_env, server, tmp_path):
    results = tmp_path / "results"
    append_records(results, [make_record(s) for s in range(3)] + [make_record(7, task="transfer")])
    before = snapshot(results)
    commit_route = "POST /api/datasets/wsb/results/commit/main"
    n_commits = server.requests.count(commit_route)
    url, added = hub.push_results("wsb/results", results, token=TOKEN)
    assert added == 4 and server.requests.count(commit_route) == n_commits + 1  # all three files in ONE commit
    assert url.startswith(server.endpoint) and "/commit/" in url
    assert snapshot(results) == before  # pushing never writes locally
    files = server.files("wsb/results")
    assert {"records.jsonl", "data/records.parquet", "README.md"} <= set(files)
    lines = files["records.jsonl"].decode().splitlines()
    assert [json.loads(x)["record_id"] for x in lines] == sorted(r.record_id for r in read_records(results))
    card = files["README.md"].decode()
    assert "configs:" in card and "leaderboards/README.md" in card and "`metric.acc`" in card

    ds = hf_env.load_dataset("wsb/results")
    table = ds["train"].to_pandas()
    assert len(table) == 4
    assert sorted(table["seed"]) == [0, 1, 2, 7]
    assert set(table["task"]) == {"reconstruction", "transfer"}
    assert table.set_index("seed").loc[2, "metric.acc"] == pytest.approx(0.52)
    # a second push of the same records updates the repo in one more commit, adding nothing
    assert hub.push_results("wsb/results", results, token=TOKEN)[1] == 0


def test_push_merges_with_the_records_already_on_the_hub(hf_env, server, tmp_path):
    """Store A pushed, then store B: the Hub keeps both (push used to replace records.jsonl)."""
    a, b = tmp_path / "a", tmp_path / "b"
    append_records(a, [make_record(s) for s in range(3)])
    append_records(b, [make_record(s) for s in (2, 3)])
    assert hub.push_results("wsb/shared", a, token=TOKEN)[1] == 3
    assert hub.push_results("wsb/shared", b, token=TOKEN)[1] == 1  # seed 2 is there already
    assert hub.pull_results("wsb/shared", tmp_path / "fresh") == 4
    assert sorted(r.seed for r in read_records(tmp_path / "fresh")) == [0, 1, 2, 3]


def test_pull_into_empty_and_partial_dirs(hf_env, server, tmp_path):
    source = tmp_path / "source"
    records = [make_record(s) for s in range(5)]
    append_records(source, records)
    hub.push_results("wsb/pull", source, token=TOKEN)

    empty = tmp_path / "empty"
    assert hub.pull_results("wsb/pull", empty) == 5  # public repo: no token needed
    assert {r.record_id for r in read_records(empty)} == {r.record_id for r in records}

    partial = tmp_path / "partial"
    append_records(partial, records[:2] + [make_record(42)])
    assert hub.pull_results("wsb/pull", partial, token=TOKEN) == 3
    ids = [r.record_id for r in read_records(partial)]
    assert len(ids) == len(set(ids)) == 6
    assert hub.pull_results("wsb/pull", partial) == 0  # idempotent
    assert len((partial / "reconstruction.jsonl").read_text().splitlines()) == 6


def make_zoo(root: Path) -> Path:
    (root / "weights").mkdir(parents=True)
    (root / "zoo.yaml").write_text(
        "name: tiny_zoo\nversion: '1.0'\ndescription: Three tiny MLPs for tests.\nlicense: MIT\n"
    )
    members = pd.DataFrame({"id": ["m0", "m1", "m2"], "split": ["train", "train", "test"],
                            "group": ["mlp"] * 3, "row": [0, 1, 2], "test_acc": [0.5, 0.6, 0.7]})
    members.to_parquet(root / "members.parquet", index=False)
    save_file({"fc.weight": torch.arange(24, dtype=torch.float32).reshape(3, 2, 4)}, str(root / "weights" / "mlp.safetensors"))
    write_manifest(root)
    return root


def test_push_and_download_zoo_round_trip(hf_env, server, tmp_path):
    zoo = make_zoo(tmp_path / "zoo")
    before = snapshot(zoo)
    hub.push_zoo(zoo, "wsb/tiny-zoo", token=TOKEN)
    assert snapshot(zoo) == before
    remote = server.files("wsb/tiny-zoo")
    assert "Three tiny MLPs" in remote["README.md"].decode() and "MIT" in remote["README.md"].decode()

    dest = hub.download_zoo("wsb/tiny-zoo", tmp_path / "store" / "tiny_zoo")
    got = snapshot(dest)
    for rel, data in before.items():
        assert got[rel] == data
    assert not any(name.startswith(".") for name in os.listdir(dest))
    assert os.listdir(dest.parent) == ["tiny_zoo"]  # no temp folders left
    with pytest.raises(WsbenchError, match="already exists"):
        hub.download_zoo("wsb/tiny-zoo", dest)

    members = hf_env.load_dataset("wsb/tiny-zoo", split="members").to_pandas()
    assert members["id"].tolist() == ["m0", "m1", "m2"]
    assert members["test_acc"].tolist() == [0.5, 0.6, 0.7]


def test_push_zoo_refuses_a_corrupt_local_zoo(hf_env, server, tmp_path):
    zoo = make_zoo(tmp_path / "zoo")
    (zoo / "members.parquet").write_bytes(b"garbage")
    n_requests = len(server.requests)
    with pytest.raises(IntegrityError, match="members.parquet"):
        hub.push_zoo(zoo, "wsb/corrupt", token=TOKEN)
    assert len(server.requests) == n_requests  # nothing was sent


@pytest.mark.parametrize("tampered, how", [("weights/mlp.safetensors", "flip"), ("members.parquet", "truncate")])
def test_tampered_download_leaves_nothing(hf_env, server, tmp_path, tampered, how):
    repo = f"wsb/tampered-{how}"
    hub.push_zoo(make_zoo(tmp_path / "zoo"), repo, token=TOKEN)
    data = bytearray(server.files(repo)[tampered])
    if how == "flip":
        data[-9] ^= 0x01  # same size, one bit flipped: only the checksum can tell
    else:
        del data[-100:]  # served consistently shorter, as a truncated mirror copy would be
    server.tamper(repo, tampered, bytes(data))
    store = tmp_path / "store"
    with pytest.raises(IntegrityError, match=tampered.replace(".", r"\.")) as err:
        hub.download_zoo(repo, store / "z")
    assert repo in str(err.value) and "tmp" not in str(err.value).replace(str(tmp_path), "")
    assert not store.exists()  # not even the parent folder it had to create


def test_download_pinned_revision(hf_env, server, tmp_path):
    zoo = make_zoo(tmp_path / "zoo")
    first = hub.push_zoo(zoo, "wsb/versions", token=TOKEN).rsplit("/", 1)[-1]
    (zoo / "zoo.yaml").write_text("name: tiny_zoo\nversion: '2.0'\ndescription: changed\n")
    write_manifest(zoo)
    hub.push_zoo(zoo, "wsb/versions", token=TOKEN)
    old = hub.download_zoo("wsb/versions", tmp_path / "old", revision=first)
    new = hub.download_zoo("wsb/versions", tmp_path / "new")
    assert "version: '1.0'" in (old / "zoo.yaml").read_text()
    assert "version: '2.0'" in (new / "zoo.yaml").read_text()
    hub.download_zoo("wsb/versions", new, revision=first, overwrite=True)
    assert (new / "zoo.yaml").read_text() == (old / "zoo.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(WsbenchError, match="no such revision"):
        hub.download_zoo("wsb/versions", tmp_path / "bad", revision="0" * 40)


def test_private_repo_needs_token_to_pull(hf_env, server, tmp_path):
    append_records(tmp_path / "src", [make_record(1)])
    hub.push_results("wsb/private", tmp_path / "src", token=TOKEN, private=True)
    with pytest.raises(WsbenchError, match="HF_TOKEN"):
        hub.pull_results("wsb/private", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
    assert hub.pull_results("wsb/private", tmp_path / "dst", token=TOKEN) == 1


def test_missing_token_for_push(hf_env, tmp_path):
    append_records(tmp_path / "r", [make_record(0)])
    with pytest.raises(WsbenchError, match="HF_TOKEN"):
        hub.push_results("wsb/x", tmp_path / "r")
    with pytest.raises(WsbenchError, match="HF_TOKEN"):
        hub.push_zoo(make_zoo(tmp_path / "zoo"), "wsb/x")


def test_token_from_environment(hf_env, server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    append_records(tmp_path / "r", [make_record(0)])
    assert "/commit/" in hub.push_results("wsb/env-token", tmp_path / "r")[0]


def test_wrong_token_and_missing_repo_errors_hide_the_token(hf_env, server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    append_records(tmp_path / "r", [make_record(0)])
    bad = "hf_WrongToken_ShouldNeverBeShown"
    with pytest.raises(WsbenchError, match="refused the credentials") as push_err:
        hub.push_results("wsb/secret", tmp_path / "r", token=bad)
    assert "wsb/secret" in str(push_err.value) and server.endpoint in str(push_err.value)
    with pytest.raises(WsbenchError, match="not found") as pull_err:
        hub.pull_results("wsb/does-not-exist", tmp_path / "r2", token=TOKEN)
    assert server.endpoint in str(pull_err.value)
    with pytest.raises(WsbenchError, match="not found") as dl_err:
        hub.download_zoo("wsb/does-not-exist", tmp_path / "z", token=TOKEN)
    assert not (tmp_path / "z").exists()
    for text in (str(push_err.value), str(pull_err.value), str(dl_err.value), caplog.text):
        assert bad not in text and TOKEN not in text
    for record in read_records(tmp_path / "r"):
        assert bad not in record.to_json() and TOKEN not in record.to_json()
    assert not (tmp_path / "r2").exists()  # a failed pull writes nothing


def test_unreachable_endpoint(hf_env, tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: connection refused
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    append_records(tmp_path / "r", [make_record(0)])
    before = snapshot(tmp_path / "r")
    with pytest.raises(WsbenchError, match="cannot reach") as push_err:
        hub.push_results("wsb/any", tmp_path / "r", endpoint=closed, token=TOKEN)
    with pytest.raises(WsbenchError) as pull_err:
        hub.pull_results("wsb/any", tmp_path / "r", endpoint=closed, token=TOKEN)
    with pytest.raises(WsbenchError) as dl_err:
        hub.download_zoo("wsb/any", tmp_path / "z", endpoint=closed)
    for err in (push_err, pull_err, dl_err):
        assert "wsb/any" in str(err.value) and closed in str(err.value) and TOKEN not in str(err.value)
    assert snapshot(tmp_path / "r") == before
    assert not (tmp_path / "z").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_pull_repairs_a_corrupted_local_line_from_the_hub_copy(hf_env, server, tmp_path):
    local = tmp_path / "local"
    append_records(local, [make_record(0), make_record(1)])
    hub.push_results("wsb/repair", local, token=TOKEN)
    path = local / "reconstruction.jsonl"
    lines = path.read_text().splitlines()
    bad = json.loads(lines[0])
    bad["seed"] = 99  # one edited field: the line no longer verifies
    path.write_text(json.dumps(bad) + "\n" + lines[1] + "\n")
    assert hub.pull_results("wsb/repair", local) == 1
    with pytest.warns(UserWarning, match="corrupted"):
        assert sorted(r.seed for r in read_records(local)) == [0, 1]
