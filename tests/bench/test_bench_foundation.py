"""Foundation speed on CPU, each against a simple reference timed in the same run (ratio printed).

Run: .venv/bin/python -m pytest tests/bench/test_bench_foundation.py --benchmark-only -s
Threads: torch runs with WSBENCH_BENCH_THREADS threads (default 1). On a shared 2-core machine
under load, OpenMP's 2 threads make small tensor ops 10-100x slower and the numbers meaningless;
one thread gives stable, comparable timings (the printed header says what was used).
Covered: zoo load vs member count (stacked safetensors vs one file per member), WeightSpace
batching of a split (index_select vs per-member state dicts), flat() and batched permutations,
batched forward of many networks (vmap) vs a loop of modules, manifest hashing, result-record
append/read, and leaderboard generation vs a plain pandas group-by.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from wsbench.archs import build_arch
from wsbench.manifest import verify_manifest
from wsbench.archs import spec_for_arch
from wsbench.weights import WeightSpace, batched_forward
from wsbench.zoo import load_zoo, write_zoo
from wsbench.zoo_card import ZooCard
from bench_timing import best_of, bench_threads  # noqa: F401 (bench_threads: a fixture)

CNN = {"in_channels": 1, "num_classes": 10, "channels": 16, "n_conv": 3}  # 4,970 parameters

pytestmark = pytest.mark.usefixtures("bench_threads")


def report(name: str, ours: float, reference: float) -> None:
    print(f"\n{name}: ours {ours * 1e3:.2f} ms, reference {reference * 1e3:.2f} ms, speed-up {reference / ours:.2f}x")


def cnn_card(name: str = "bench_cnn") -> ZooCard:
    return ZooCard.from_dict({"name": name, "version": "1", "description": "benchmark zoo", "kind": "cnn",
                              "dataset": "mnist", "archs": {"cnn": {"arch": "small_cnn", "kwargs": CNN}},
                              "builder": "none", "variants": {"tiny": {}}})


def random_weights(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    spec = spec_for_arch("small_cnn", **CNN)
    g = torch.Generator().manual_seed(seed)
    return {p.key: torch.randn((n, *p.shape), generator=g) * 0.1 for p in spec.params}


def make_bench_zoo(root: Path, n: int) -> Path:
    splits = (["train"] * 8 + ["val", "test"]) * (n // 10 + 1)
    members = pd.DataFrame({"id": [f"m{i:06d}" for i in range(n)], "split": splits[:n], "group": "cnn",
                            "row": range(n), "test_acc": torch.rand(n).tolist()})
    write_zoo(root, cnn_card(), members, {"cnn": random_weights(n)})
    return root


@pytest.fixture(scope="module")
def zoos(tmp_path_factory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("bench_zoos")
    return {n: make_bench_zoo(base / f"z{n}", n) for n in (100, 1000)}


# ----------------------------------------------------------------------------- zoo load

@pytest.mark.parametrize("n", [100, 1000])
def test_bench_zoo_load_vs_member_count(benchmark, zoos, tmp_path, n):
    """load_zoo (verify=False: the format cost) vs the naive format: one safetensors file per member."""
    root = zoos[n]
    ws = load_zoo(root, verify=False).weights()
    per_member = tmp_path / "per_member"
    per_member.mkdir()
    for i in range(n):
        save_file({k: t[i].contiguous() for k, t in ws.tensors.items()}, str(per_member / f"m{i:06d}.safetensors"))

    def reference() -> dict[str, torch.Tensor]:
        sds = [load_file(str(per_member / f"m{i:06d}.safetensors")) for i in range(n)]
        return {k: torch.stack([sd[k] for sd in sds]) for k in sds[0]}

    def ours() -> WeightSpace:
        return load_zoo(root, verify=False).weights()

    got = benchmark(ours)
    ref = reference()
    assert all(torch.equal(got.tensors[k], ref[k]) for k in ref)
    report(f"load a zoo of {n} small CNNs into one WeightSpace", benchmark.stats.stats.min, best_of(reference))
    verify = best_of(lambda: verify_manifest(root))
    mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20
    print(f"  sha256 manifest check of the same zoo: {verify * 1e3:.1f} ms ({mb / verify:.0f} MB/s, {mb:.1f} MB)")


# ----------------------------------------------------------------------------- WeightSpace batching

def test_bench_weightspace_split_batching(benchmark, zoos):
    """zoo.weights(split=) (one index_select per tensor) vs stacking per-member state dicts."""
    zoo = load_zoo(zoos[1000], verify=False)
    ids = list(zoo.split("train")["id"])

    def reference() -> WeightSpace:
        return WeightSpace.from_state_dicts(zoo.spec(), [zoo.state_dict(m) for m in ids[:100]])

    got = benchmark(lambda: zoo.weights(split="train"))
    assert len(got) == len(ids) == 800
    ref = reference()
    assert all(torch.equal(got.tensors[k][:100], ref.tensors[k]) for k in ref.tensors)
    ref_s = best_of(reference) * len(ids) / 100  # per-member cost, scaled to the same 800 members
    report("batch a split of 800 members (reference: 100 per-member state dicts, x8)", benchmark.stats.stats.min, ref_s)


def test_bench_flat_and_permute(benchmark, zoos):
    """Batched per-network permutations vs a loop over networks."""
    ws = load_zoo(zoos[1000], verify=False).weights()[:256]
    perms = ws.random_permutation(torch.Generator().manual_seed(0))

    def reference() -> list[WeightSpace]:
        return [ws[i].permute({g: p[i] for g, p in perms.items()}) for i in range(len(ws))]

    got = benchmark(lambda: ws.permute(perms))
    ref = reference()
    for i in (0, 17, 255):
        assert all(torch.equal(got.tensors[k][i], ref[i].tensors[k][0]) for k in got.tensors)
    report("permute 256 small CNNs (one random permutation each)", benchmark.stats.stats.min, best_of(reference))
    flat_s = best_of(lambda: ws.flat())
    print(f"  flat() of 256 networks: {flat_s * 1e3:.2f} ms -> {tuple(ws.flat().shape)}")


def test_bench_batched_forward(benchmark, zoos):
    """batched_forward (vmap over functional_call) vs loading each network into a module in a loop."""
    ws = load_zoo(zoos[1000], verify=False).weights()[:64]
    x = torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model = build_arch("small_cnn", **CNN).eval()

    def reference() -> torch.Tensor:
        outs = []
        with torch.no_grad():
            for sd in ws.state_dicts():
                model.load_state_dict(sd)
                outs.append(model(x))
        return torch.stack(outs)

    with torch.no_grad():
        got = benchmark(lambda: batched_forward(model, ws, x))
    torch.testing.assert_close(got, reference(), rtol=1e-4, atol=1e-5)
    report("forward 64 small CNNs on 256 images", benchmark.stats.stats.min, best_of(reference))


# ----------------------------------------------------------------------------- manifests and results

def test_bench_manifest_hashing(benchmark, zoos):
    """verify_manifest (streamed, 1 MiB chunks) vs reading each file whole into hashlib."""
    root = zoos[1000]
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json")

    def reference() -> list[str]:
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]

    benchmark(verify_manifest, root)
    manifest = json.loads((root / "manifest.json").read_text())["files"]
    assert reference() == [manifest[p.relative_to(root).as_posix()]["sha256"] for p in files]
    report("sha256-verify a 1,000-member zoo", benchmark.stats.stats.min, best_of(reference))


def _records(n: int, n_methods: int = 5, n_configs: int = 4):
    from wsbench.results import ResultRecord

    out = []
    for i in range(n):
        m, c, seed = i % n_methods, (i // n_methods) % n_configs, i // (n_methods * n_configs)
        out.append(ResultRecord.create(
            task="reconstruction", task_version=1, zoo=f"zoo{i % 2}", zoo_version="1", split="test",
            method=f"method{m}", method_config={"hidden": 16 * (c + 1)}, preset=None, seed=seed,
            metrics={"acc_recon": 80 + (i * 7919 % 100) / 10, "compression_ratio": 2.0 + c},
            higher_is_better={"acc_recon": True, "compression_ratio": True}, status="ok", n_train=0, n_eval=100,
            n_params=1000, wall_s=1.0, device="cpu", versions={"wsbench": "0", "torch": "0", "python": "0"},
            git_commit=None, date="2025-01-01T00:00:00+00:00", command="bench", extra={"member": "m0"}))
    return out


def test_bench_results_append_and_read(benchmark, tmp_path):
    """append_records of 2,000 records in one call (one lock, one write) vs one call per record;
    read_records (parse + id check) timed after."""
    from wsbench.results import append_records, read_records

    records = _records(2000)
    counter = iter(range(10**6))

    def ours() -> None:
        append_records(tmp_path / f"one_call_{next(counter)}", records)

    def reference() -> None:
        d = tmp_path / f"per_record_{next(counter)}"
        for r in records[:200]:
            append_records(d, [r])

    benchmark.pedantic(ours, rounds=3, iterations=1)
    report("append 2,000 records (reference: 200 one-record appends, x10)", benchmark.stats.stats.min,
           best_of(reference) * 10)
    d = tmp_path / "one_call_0"
    t = time.perf_counter()
    got = read_records(d)
    read_s = time.perf_counter() - t
    plain = best_of(lambda: [json.loads(line) for line in (d / "reconstruction.jsonl").read_text().splitlines()])
    assert len(got) == 2000
    print(f"  read_records of 2,000: {read_s * 1e3:.1f} ms; plain json.loads of the lines: {plain * 1e3:.1f} ms "
          f"(validation costs {read_s / plain:.1f}x)")


def test_bench_leaderboard_generation(benchmark, tmp_path):
    """generate_leaderboard (markdown + HTML + plots) vs a pandas group-by mean/std table."""
    pytest.importorskip("wsbench.leaderboard")
    from wsbench.leaderboard import build_tables, generate_leaderboard
    from wsbench.results import append_records, read_records, records_frame

    res = tmp_path / "res"
    append_records(res, _records(2000))
    records = read_records(res)

    def reference() -> str:
        frame = records_frame(read_records(res))
        return frame.groupby(["zoo", "method", "method_config"])[["metric.acc_recon", "metric.compression_ratio"]] \
            .agg(["mean", "std"]).to_string()

    written = benchmark.pedantic(generate_leaderboard, args=(res, tmp_path / "lb"), rounds=3, iterations=1)
    assert any(p.name == "README.md" for p in written)
    text = (tmp_path / "lb" / "README.md").read_text()
    assert "method0" in text and "method4" in text
    report("leaderboard from 2,000 records (all outputs)", benchmark.stats.stats.min, best_of(reference))
    tables_s = best_of(lambda: build_tables(records))
    print(f"  build_tables alone (records already parsed): {tables_s * 1e3:.1f} ms")
