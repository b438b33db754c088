"""The package's structure: no import cycles between its modules (read from the source with ast,
function-level imports included), and the registries fill from named catalogues and plugins."""
from __future__ import annotations

import ast
import itertools
from pathlib import Path

import wsbench
from wsbench import registry

PACKAGE = Path(wsbench.__file__).parent


def _module_graph() -> dict[str, set[str]]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in mods:
                    name = name.rsplit(".", 1)[0] if "." in name else ""
                if name and name != mod:
                    graph[mod].add(name)
    return graph


def test_no_import_cycles():
    graph = _module_graph()

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {m: reach(m) for m in graph}
    cycles = [(a, b) for a, b in itertools.combinations(sorted(graph), 2) if b in reachable[a] and a in reachable[b]]
    assert cycles == [], f"modules importing each other (directly or through others): {cycles}"


def test_plugins_named_by_entry_points_fill_the_registries(monkeypatch):
    import importlib.metadata
    import sys
    import types

    plugin = types.ModuleType("wsbench_test_plugin")

    def load_plugin():
        registry.TASKS.add("plugin_task_for_test", type("PluginTask", (), {"name": "plugin_task_for_test"}))
        return plugin

    class EntryPoint:
        name, group = "test", registry.PLUGIN_GROUP
        load = staticmethod(load_plugin)

    registry.TASKS.names()  # the builtins registered first: the copy below must hold them (undone at teardown)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [EntryPoint()] if kw.get("group") == registry.PLUGIN_GROUP else real(**kw))
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setitem(sys.modules, "wsbench_test_plugin", plugin)
    monkeypatch.setattr(registry.TASKS, "_entries", dict(registry.TASKS._entries))
    assert "plugin_task_for_test" in registry.TASKS.names() and "reconstruction" in registry.TASKS.names()


def _module_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (its top-level statements, not its functions' bodies)."""
    found, todo = set(), list(ast.parse(path.read_text(encoding="utf-8")).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            todo += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", []) + \
                [s for h in getattr(node, "handlers", []) for s in h.body]
    return found


def test_only_the_message_passing_module_imports_torch_geometric_on_import():
    """Importing torch_geometric loads torch._dynamo (about 3 s on 2 cores): registering the built-in methods,
    which every run_bench.py process does, must not pay it; the neural graph encoder imports it when built."""
    importers = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                 if any(m.split(".")[0] == "torch_geometric" for m in _module_level_imports(p))}
    assert importers == {"methods/graph_message_passing.py"}
    eager = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
             if any(m.endswith("graph_message_passing") for m in _module_level_imports(p))}
    assert eager == set()
