"""`run_bench.py list`: methods, zoos, tasks, benchmark entries and presets, and which method can do which task."""
from __future__ import annotations

from .registry import METHODS, TASKS, ZOOS


def listing() -> dict:
    from .runner import preset_names

    methods = {}
    for name in METHODS.names():
        cls = METHODS.get(name)
        tasks = [t for t in TASKS.names() if TASKS.get(t).capability == cls.capability]
        methods[name] = {"capability": cls.capability, "description": cls.description,
                         "tasks": tasks, "presets": preset_names(name),
                         "architecture_agnostic": cls.architecture_agnostic}
    zoos = {}
    for name in ZOOS.names():
        card = ZOOS.get(name)
        zoos[name] = {"kind": card.kind, "dataset": card.dataset, "version": card.version,
                      "variants": sorted(card.variants), "description": " ".join(card.description.split())}
    for name, error in ZOOS.broken().items():  # listed, so that the typo is seen; the other zoos work
        zoos[name] = {"broken": str(error)}
    zoos = dict(sorted(zoos.items()))
    tasks = {name: {"version": TASKS.get(name).version, "needs": TASKS.get(name).capability,
                    "zoo_kinds": list(TASKS.get(name).zoo_kinds), "description": TASKS.get(name).description,
                    "metrics": {m: {"higher_is_better": d.higher_is_better, "headline": d.headline,
                                    "description": d.description} for m, d in TASKS.get(name).metrics.items()}}
             for name in TASKS.names()}
    from .benchmarks import loadable_benchmarks

    entries, broken = loadable_benchmarks()
    benchmarks: dict[str, dict] = {name: {"broken": error} for name, error in broken.items()}
    for b in entries:
        benchmarks[b.name] = {"task": b.task, "zoo": b.zoo, "zoo_variant": b.zoo_variant, "options": b.options,
                              "preset": b.preset, "metrics": list(b.metrics), "version": b.version}
    benchmarks = dict(sorted(benchmarks.items()))
    return {"methods": methods, "zoos": zoos, "tasks": tasks, "benchmarks": benchmarks}


def _short(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def print_listing(con) -> None:
    data = listing()
    if con.as_json:
        import json

        print(json.dumps(data, sort_keys=True, indent=1))
        return
    print("METHODS (name, capability, tasks it can do, presets)")
    for name, m in data["methods"].items():
        agn = ", architecture-agnostic" if m["architecture_agnostic"] else ""
        print(f"  {name:<18} {m['capability']}{agn}: {_short(m['description'], 70)}")
        print(f"  {'':<18} tasks: {', '.join(m['tasks']) or '-'} | presets: {', '.join(m['presets']) or '-'}")
    print("\nZOOS (name, kind, dataset, variants)")
    for name, z in data["zoos"].items():
        if "broken" in z:
            print(f"  {name:<26} BROKEN CARD: {_short(z['broken'], 110)}")
            continue
        print(f"  {name:<26} {z['kind']:<6} {z['dataset']:<14} v{z['version']} [{', '.join(z['variants'])}]")
        print(f"  {'':<26} {_short(z['description'])}")
    print("\nTASKS (name, version, what it needs, zoo kinds)")
    for name, t in data["tasks"].items():
        article = "an" if t["needs"][0] in "aeiou" else "a"
        print(f"  {name:<22} v{t['version']} needs {article} {t['needs']} on {'/'.join(t['zoo_kinds']) or 'any'} zoos: "
              f"{_short(t['description'], 60)}")
        marks = [f"{m} {'↑' if d['higher_is_better'] else '↓'}{'*' if d['headline'] else ''}" for m, d in t["metrics"].items()]
        print(f"  {'':<22} metrics (* headline): {', '.join(marks)}")
    print("\nBENCHMARKS (name: task on zoo [variant], defining options; run with --benchmark NAME --method M)")
    for name, b in data["benchmarks"].items():
        if "broken" in b:
            print(f"  {name}: BROKEN ENTRY: {_short(b['broken'], 100)}")
            continue
        opts = ", ".join(f"{k}={v}" for k, v in b["options"].items()) or "-"
        print(f"  {name}: {b['task']} on {b['zoo']} [{b['zoo_variant']}]; {opts}; preset {b['preset'] or 'default'}")
    print("\nPresets: baselines/<method>/<preset>.yaml; `--preset auto` = paper on GPU, quick on CPU.")
