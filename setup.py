"""Builds wsbench with its presets (baselines/), zoo cards (zoos/*.yaml) and benchmark entries
(benchmarks/) inside the package, so that an installed, non-editable wsbench finds them too
(wsbench/_bundled/; a checkout reads the top-level folders). Everything else is in pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = {"baselines": ("*.yaml",), "zoos": ("*.yaml",), "benchmarks": ("*.yaml",)}


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        for folder, patterns in BUNDLED.items():
            target = Path(self.build_lib) / "wsbench" / "_bundled" / folder
            shutil.rmtree(target, ignore_errors=True)
            for pattern in patterns:
                for src in sorted((ROOT / folder).rglob(pattern)):
                    if "summaries" in src.relative_to(ROOT / folder).parts:
                        continue
                    dst = target / src.relative_to(ROOT / folder)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildPyWithData})
