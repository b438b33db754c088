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

    def summary(self, records: Iterable[Any], results_dir: Path | None, recorded: Iterable[Any] = ()) -> None:
        """The new records; then those of requested runs that were recorded already; then, for
        reconstruction, every recorded row of the same zoo members (other presets, baselines)."""
        records, recorded = list(records), list(recorded)
        if self.as_json:
            print(json.dumps([r.as_dict() for r in records], sort_keys=True))
            return
        if records:
            self._table(records)
            if results_dir is not None:
                print(appended_line(records, results_dir))
        elif recorded:
            print("nothing new was run; the recorded result of this run:")
            self._table(recorded)
        else:
            print("nothing new was run (all requested runs are recorded already)")
        shown = records + recorded
        if results_dir is not None and shown and shown[0].task == "reconstruction":
            from .results import read_records

            print()
            print(reconstruction_comparison(read_records(results_dir), shown))

    def _table(self, records: list[Any]) -> None:
        rows = []
        for r in records:
            label = r.variant or ""
            member = r.member or ""
            shown = {k: v for k, v in r.metrics.items() if k in KEY_METRICS or k.startswith(("tau", "r2", "acc"))}
            metrics = "  ".join(f"{k}={v:.4g}" for k, v in list(shown.items())[:8])
            if r.status != "ok":
                metrics = f"not applicable: {r.reason}"
            rows.append((r.method, label, member, str(r.seed), metrics))
        print("\n".join(aligned(("method", "variant", "member", "seed", "metrics"), rows)))
        r0 = records[0]
        print(f"task {r0.task} v{r0.task_version} | zoo {r0.zoo} v{r0.zoo_version} | device {r0.device} | "
              f"{r0.wall_s:.1f} s")


def aligned(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Header and rows as lines, every column but the last padded to its widest cell."""
    widths = [max(len(x[i]) for x in rows + [header]) for i in range(len(header) - 1)]
    return ["  ".join([c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]) for row in [header, *rows]]


def _mean_cell(records: list[Any], metric: str) -> str:
    vals = [r.metrics[metric] for r in records if metric in r.metrics]
    return f"{sum(vals) / len(vals):.2f}" if vals else "-"


def reconstruction_comparison(all_records: list[Any], shown: list[Any]) -> str:
    """Every recorded reconstruction row of the members in `shown` (same zoo and version), one line
    per (member, method, preset, variant, scored test items), seeds averaged; `shown`'s rows marked."""
    from statistics import fmean

    r0 = shown[0]
    members = {r.member for r in shown}
    mine = {(r.method, r.preset, r.variant, r.member, r.n_eval) for r in shown}
    groups: dict[tuple, list[Any]] = {}
    for r in all_records:
        if (r.task, r.zoo, r.zoo_version, r.status) != ("reconstruction", r0.zoo, r0.zoo_version, "ok") \
                or r.member not in members:
            continue
        key = (r.method, r.preset, r.variant, r.member, r.n_eval)
        groups.setdefault(key, []).append(r)
    header = ("", "member", "method", "preset", "variant", "scored", "seeds", "acc %", "exact %", "params x", "bytes x",
              "device")
    rows = []
    for key, recs in sorted(groups.items(), key=lambda kv: (kv[0][3] or "", -fmean(
            r.metrics.get("acc_recon", 0.0) for r in kv[1]))):
        means = [_mean_cell(recs, m) for m in ("acc_recon", "acc_recon_cifar10_exact", "compression_ratio", "bytes_ratio")]
        rows.append(("*" if key in mine else "", key[3] or "", key[0], key[1] or "-", key[2] or "-", str(key[4]),
                     str(len({r.seed for r in recs})), *means, recs[-1].device.split(" (")[0]))
    lines = [f"recorded reconstructions of {r0.zoo} v{r0.zoo_version} (* = this run; acc = reconstructed test "
             f"accuracy on the first test set, exact = on cifar10_exact; x = compression):"]
    lines += aligned(header, rows)
    for member in sorted(m for m in members if m):
        r = next(r for r in shown if r.member == member)
        if "acc_orig" in r.metrics:
            exact = r.metrics.get("acc_orig_cifar10_exact")
            lines.append(f"original {member}: {r.metrics['acc_orig']:.2f} %"
                         + (f" / exact {exact:.2f} %" if exact is not None else ""))
    return "\n".join(lines)


def appended_line(records: list[Any], results_dir: Path) -> str:
    """How many of `records` the store holds now: a twin run finishing first (another process, the
    same run key) records its own, and this run's are then dropped, not appended twice."""
    from .results import read_records

    stored = {r.record_id for r in read_records(results_dir)}
    n = sum(r.record_id in stored for r in records)
    where = f"{results_dir}/{records[0].task}.jsonl"
    if n == len(records):
        return f"{n} record(s) appended to {where}"
    return (f"{n} of {len(records)} record(s) appended to {where}: the others' runs were recorded meanwhile by "
            f"another process (kept once)")
