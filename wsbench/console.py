"""What a run prints: log lines and progress on stderr (quiet in CI or when not a terminal),
a short summary table at the end, or JSON on stdout with --json."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable

KEY_METRICS = ("acc_orig", "acc_recon", "acc_drop", "acc_recon_cifar10_exact", "compression_ratio", "accuracy",
               "tau", "r2", "mse", "tau_test_acc", "r2_test_acc")


def progress_enabled(quiet: bool = False) -> bool:
    return not quiet and sys.stderr.isatty() and not os.environ.get("CI")


def progress_bar(total: int | None = None, desc: str = "", enabled: bool = True, unit: str = "it"):
    """A tqdm bar with ETA on stderr; a silent stand-in when disabled."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, unit=unit, dynamic_ncols=True, leave=False)


class Console:
    def __init__(self, quiet: bool = False, as_json: bool = False) -> None:
        self.quiet, self.as_json = quiet, as_json
        self.progress = progress_enabled(quiet)

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def done(self, obj: dict[str, Any], text: str) -> None:
        if self.as_json:
            print(json.dumps(obj, sort_keys=True))
        else:
            print(text)

    def summary(self, records: Iterable[Any], results_dir: Path | None) -> None:
        records = list(records)
        if self.as_json:
            print(json.dumps([r.as_dict() for r in records], sort_keys=True))
            return
        if not records:
            print("nothing new was run (all requested runs are recorded already)")
            return
        rows = []
        for r in records:
            label = r.extra.get("label") or ""
            member = r.extra.get("member") or ""
            shown = {k: v for k, v in r.metrics.items() if k in KEY_METRICS or k.startswith(("tau", "r2", "acc"))}
            metrics = "  ".join(f"{k}={v:.4g}" for k, v in list(shown.items())[:8])
            if r.status != "ok":
                metrics = f"not applicable: {r.reason}"
            rows.append((r.method, label, member, str(r.seed), metrics))
        widths = [max(len(x[i]) for x in rows + [("method", "variant", "member", "seed", "")]) for i in range(4)]
        header = ("method", "variant", "member", "seed")
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  metrics")
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
        r0 = records[0]
        print(f"task {r0.task} v{r0.task_version} | zoo {r0.zoo} v{r0.zoo_version} | device {r0.device} | "
              f"{r0.wall_s:.1f} s")
        if results_dir is not None:
            print(f"{len(records)} record(s) appended to {results_dir}/{r0.task}.jsonl")
