"""Imports every module that registers methods, tasks and zoos (loaded lazily by the registry)."""
import importlib

for _mod in ("archs",):
    importlib.import_module(f"wsbench.{_mod}")
