"""Shared by the bad-input catalogue (test_bad_inputs.py, test_bad_inputs_runs.py): toy zoos,
the CLI driver, the one-error-line assertion, snapshots, and the isolation fixtures."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
import torch

from data_paths import DATA_DIR
from wsbench.cli import main
from wsbench.manifest import write_manifest
from wsbench.zoo import write_zoo
from wsbench.zoo_card import ZooCard

REPO = Path(__file__).resolve().parent.parent
CNN_KWARGS = {"in_channels": 1, "num_classes": 10, "channels": 4, "n_conv": 2}


# ----------------------------------------------------------------------------- helpers (shared)

def toy_card(name: str = "toy_cnn", arch: str = "small_cnn", kwargs: dict | None = None, kind: str = "cnn",
             dataset: str = "mnist", group: str = "cnn", **extra) -> ZooCard:
    kwargs = CNN_KWARGS if kwargs is None and arch == "small_cnn" else (kwargs or {})
    return ZooCard.from_dict({"name": name, "version": "0.1", "description": "bad-input tests", "kind": kind,
                              "dataset": dataset, "archs": {group: {"arch": arch, "kwargs": kwargs}},
                              "builder": "none", "variants": {"tiny": {}, "full": {}}, **extra})


def make_zoo(root: Path, n: int = 4, *, arch: str = "small_cnn", kwargs: dict | None = None, kind: str = "cnn",
             name: str = "toy_cnn", fill: float | None = None, splits: list[str] | None = None) -> Path:
    """A tiny zoo of random networks (a small CNN on MNIST by default); `fill` sets every value."""
    from wsbench.archs import build_arch

    card = toy_card(name, arch, kwargs, kind)
    group = next(iter(card.archs))
    torch.manual_seed(0)
    sds = [build_arch(arch, **card.archs[group]["kwargs"]).state_dict() for _ in range(n)]
    weights = {group: {k: torch.stack([sd[k] for sd in sds]) for k in sds[0]}}
    if fill is not None:
        weights[group] = {k: torch.full_like(v, fill) for k, v in weights[group].items()}
    splits = splits or (["train", "val", "test", "test"] * n)[:n]
    members = pd.DataFrame({"id": [f"m{i}" for i in range(n)], "split": splits, "group": group,
                            "row": list(range(n)), "test_acc": [0.5] * n})
    write_zoo(root, card, members, weights)
    return root


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (missing roots count as empty)."""
    out = {}
    for root in roots:
        if root.exists():
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli(argv: list[str], tmp_path: Path, capsys, quiet: bool = True) -> tuple[int, str, str]:
    """Run the CLI in-process with results and runs in tmp_path; returns (rc, stdout, stderr)."""
    extra = []
    if argv and argv[0] not in ("list", "leaderboard", "build-zoo", "import-zoo", "push", "pull", "push-zoo"):
        extra = ["--results-dir", str(tmp_path / "res"), "--runs-dir", str(tmp_path / "runs")]
    capsys.readouterr()
    rc = main((["--quiet"] if quiet else []) + argv + extra)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_user_error(rc: int, err: str, *needles: str) -> None:
    """Exit 2, no traceback, one `error:` line that contains every needle."""
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert rc == 2, (rc, err)


def assert_untouched(before: dict[str, str], tmp_path: Path, *roots: Path) -> None:
    """Nothing under roots changed, and no results or run checkpoints were written."""
    assert snapshot(*roots) == before
    assert snapshot(tmp_path / "res", tmp_path / "runs") == {}




def offline_hub(monkeypatch) -> None:
    """No network in tests: a dataset missing from the mirror fails at once instead of timing out."""
    try:
        import wsbench.data_sources as sources
    except ImportError:
        return

    def refuse(hub_id, split, *a, **k):
        raise ConnectionError(f"offline (tests): cannot download {hub_id}")

    monkeypatch.setattr(sources, "read_hub_split", refuse)


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, tmp_path_factory, monkeypatch):
    """Zoo store in tmp, the real data mirror, a session-wide decoded-image cache, no network."""
    monkeypatch.setenv("WSBENCH_ZOO_DIR", str(tmp_path / "zoo_store"))
    monkeypatch.setenv("WSBENCH_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("WSBENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "image_cache"))
    offline_hub(monkeypatch)


@pytest.fixture
def zoo(tmp_path) -> Path:
    return make_zoo(tmp_path / "zoo")


def run_on(zoo_root: Path, *more: str, method: str = "magnitude_prune") -> list[str]:
    return ["--method", method, "--zoo", str(zoo_root), *more]


def edit_zoo(root: Path, fn) -> None:
    """Edit a zoo file, then refresh the manifest so that only the content check can catch it."""
    fn(root)
    write_manifest(root)


SMALL_CNN_CARD_KWARGS = {"in_channels": 1, "num_classes": 10, "channels": 16, "n_conv": 3}  # small_cnn_mnist's


def instant_small_cnn_builder(tmp_path: Path, monkeypatch) -> None:
    """Make `build-zoo small_cnn_mnist` return 4 random networks at once (for tests of what happens
    around a build: output folders, leftovers, disk errors), instead of minutes of training."""
    from wsbench import zoo_builders
    from wsbench.zoo import load_zoo

    src = load_zoo(make_zoo(tmp_path / "instant_src", n=4, kwargs=SMALL_CNN_CARD_KWARGS))
    result = zoo_builders.BuildResult(src.members, {"cnn": src.weights(group="cnn").tensors})
    monkeypatch.setitem(zoo_builders.BUILDERS._entries, "small_cnn_zoo", lambda card, ctx: result)
