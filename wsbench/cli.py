"""Command line: `python run_bench.py --method nern --zoo cifar10_resnet` and sub-commands.

Exit codes: 0 success, 2 user error (one clear line, no traceback), 130 interrupted,
1 internal error (a bug: one line plus where the traceback was written).
"""
from __future__ import annotations

import argparse
import errno
import os
import shlex
import signal
import sys
import tempfile
import traceback
from pathlib import Path

from . import __version__
from .allocator import tune_allocator
from .errors import ConfigError, UnknownNameError, WsbenchError

SUBCOMMANDS = ("run", "list", "leaderboard", "build-zoo", "import-zoo", "push", "pull", "push-zoo", "merge-records",
               "migrate-records")

EPILOG = """examples:
  run_bench.py list                                        what can be run
  run_bench.py --method magnitude_prune --zoo cifar10_resnet
  run_bench.py --method nern --zoo cifar10_resnet --member resnet20_pretrained --preset quick
  run_bench.py --method dwsnet --zoo siren_mnist --seeds 0 1 2
  run_bench.py leaderboard                                 regenerate leaderboards/ from the records
  run_bench.py build-zoo small_cnn_mnist --variant tiny
"""


def _run_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, help="method registry name (see `list`)")
    p.add_argument("--zoo", help="zoo name (see `list`) or path to a zoo folder (required unless --benchmark)")
    p.add_argument("--benchmark", help="a benchmark entry (benchmarks/NAME.yaml, see `list`): its task, zoo, variant, "
                                       "task options and preset")
    p.add_argument("--task", help="task name (default: reconstruction for reconstructors, property_prediction "
                                  "for CNN zoos, inr_classification for INR zoos)")
    p.add_argument("--seed", type=int, default=None, help="one seed (default 0)")
    p.add_argument("--seeds", type=int, nargs="+", help="several seeds, one record set each")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (auto: cuda when present)")
    p.add_argument("--preset", default="auto", help="config preset in baselines/METHOD/ (auto: paper on GPU, quick on CPU)")
    p.add_argument("--config", help="a YAML file of method config keys (and an optional task: mapping)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (task.KEY for task options); repeatable")
    p.add_argument("--member", action="append", help="zoo member id(s) to use (reconstruction); repeatable")
    p.add_argument("--zoo-variant", help="zoo variant (default: the card's default, e.g. full)")
    p.add_argument("--results-dir", default="leaderboards/results", help="where records are appended")
    p.add_argument("--runs-dir", default="runs", help="checkpoints of runs in progress (resume)")
    p.add_argument("--no-save", action="store_true", help="print results, append no record")
    p.add_argument("--force", action="store_true", help="run again even if this run's records exist")
    p.add_argument("--push-to-hub", metavar="REPO", help="after the run, push all records to this Hub dataset repo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_bench.py", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="wsbench: benchmark weight-space learning methods on model zoos. "
                    "Without a sub-command, runs --method on --zoo.")
    parser.add_argument("--version", action="version", version=f"wsbench {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _run_parser(sub.add_parser("run", help="run a method on a zoo (the default command)"))
    sub.add_parser("list", help="methods, zoos, tasks, presets and which method can do which task")
    lb = sub.add_parser("leaderboard", help="regenerate leaderboards/ (markdown, HTML, plots) from the records")
    lb.add_argument("--results-dir", default="leaderboards/results")
    lb.add_argument("--out", default="leaderboards")
    push = sub.add_parser("push", help="push the result records to a Hub dataset repo")
    push.add_argument("repo")
    push.add_argument("--results-dir", default="leaderboards/results")
    pull = sub.add_parser("pull", help="merge result records from a Hub dataset repo into the local store")
    pull.add_argument("repo")
    pull.add_argument("--results-dir", default="leaderboards/results")
    mr = sub.add_parser("merge-records", help="append the result records found below a folder (e.g. what a GPU "
                                               "session returned) to the local store, skipping duplicates")
    mr.add_argument("folder")
    mr.add_argument("--results-dir", default="leaderboards/results")
    mg = sub.add_parser("migrate-records", help="rewrite a store's older result records in the current schema "
                                                 "(older records are read either way)")
    mg.add_argument("--results-dir", default="leaderboards/results")
    pz = sub.add_parser("push-zoo", help="push a built zoo folder to a Hub dataset repo")
    pz.add_argument("name", help="zoo name or folder")
    pz.add_argument("repo")
    pz.add_argument("--variant")
    try:
        from .commands.zoo_commands import register as register_zoo_commands

        register_zoo_commands(sub)
    except ImportError:  # zoo building commands not installed in this checkout
        pass
    return parser


def _normalise_argv(argv: list[str]) -> list[str]:
    """`run_bench.py --method X ...` means `run_bench.py run --method X ...`."""
    globals_ = {"--quiet", "--json", "--debug"}
    head = [a for a in argv if a in globals_]
    rest = [a for a in argv if a not in globals_]
    if rest and rest[0] not in SUBCOMMANDS and rest[0] not in ("-h", "--help", "--version"):
        if not rest[0].startswith("-"):  # a misspelt command, not options of `run`
            from .registry import closest

            hint = closest(rest[0], sorted(SUBCOMMANDS))
            raise UnknownNameError(f"unknown command {rest[0]!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                                   + f" (commands: {', '.join(sorted(SUBCOMMANDS))})")
        rest = ["run"] + rest
    return head + rest


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler, `kill`, a lease's time limit): unwound like Ctrl-C."""


def _on_sigterm(signum, frame) -> None:  # noqa: ARG001 - the signal handler's signature
    raise _Terminated()


STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}  # the disk, not the program


def _internal_error(e: BaseException, debug: bool) -> int:
    if debug:
        raise e
    fd, path = tempfile.mkstemp(prefix="wsbench-traceback-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        traceback.print_exception(e, file=f)
    print(f"internal error: {type(e).__name__}: {e} (traceback in {path}; please report it)", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        tune_allocator()  # large per-step temporaries: reuse heap memory instead of mmap/munmap each step
        normalised = _normalise_argv(argv)
    except WsbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    args = parser.parse_args(normalised)
    if args.command is None:
        parser.print_help()
        return 0
    command_line = "python run_bench.py " + " ".join(shlex.quote(a) for a in argv)
    ok = False
    try:
        previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (main() called from a thread): leave signals alone
        previous_sigterm = None
    try:
        code = _dispatch(args, command_line)
        ok = code == 0
        return code
    except WsbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted"
        print(f"{what}: finished work is kept; run the same command again to resume", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS or args.debug:
            return _internal_error(e, args.debug)
        where = f" {e.filename}" if e.filename else ""
        print(f"error: cannot write{where}: {e.strerror or e} (what was finished is kept; nothing is half-written)",
              file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not a user error
        return _internal_error(e, args.debug)
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        if "wsbench.distributed" in sys.modules:  # under torchrun: leave the process group (waiting
            sys.modules["wsbench.distributed"].shutdown(wait=ok)  # for the others only after a success)


def _dispatch(args: argparse.Namespace, command_line: str) -> int:
    from .console import Console

    con = Console(quiet=args.quiet, as_json=args.json)
    if args.command == "run":
        return _cmd_run(args, command_line, con)
    if args.command == "list":
        from .listing import print_listing

        print_listing(con)
        return 0
    if args.command == "leaderboard":
        from .leaderboard import generate_leaderboard

        paths = generate_leaderboard(args.results_dir, args.out)
        con.done({"written": [str(p) for p in paths]}, f"leaderboard written: {', '.join(str(p) for p in paths)}")
        return 0
    if args.command == "merge-records":
        return _cmd_merge_records(args, con)
    if args.command == "migrate-records":
        from .record_merge import migrate_store

        mig = migrate_store(args.results_dir)
        for line in mig.kept_bad:
            con.log(f"left as it was: {line}")
        con.done({"upgraded": mig.upgraded, "files": [str(p) for p in mig.files], "kept_bad": mig.kept_bad},
                 f"{mig.upgraded} record(s) rewritten in schema 2 in {len(mig.files)} file(s) of {args.results_dir}")
        return 0
    if args.command in ("push", "pull", "push-zoo"):
        return _cmd_hub(args, con)
    return args.handler(args)  # sub-commands registered by other modules


def _cmd_run(args: argparse.Namespace, command_line: str, con) -> int:
    from .runner import RunRequest, run_benchmark

    seeds = args.seeds or [args.seed if args.seed is not None else 0]
    bad = [s for s in seeds if not 0 <= s < 2**32]
    if bad:
        raise ConfigError(f"seed {bad[0]}: seeds are integers from 0 to {2**32 - 1}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, seeds))}: a seed given twice would be one run counted twice")
    if not args.zoo and not args.benchmark:
        raise ConfigError("run: --zoo NAME (or --benchmark NAME) is required")
    req = RunRequest(method=args.method, zoo=args.zoo, benchmark=args.benchmark, task=args.task, seeds=seeds, device=args.device,
                     preset=args.preset, config_path=args.config, overrides=args.overrides, members=args.member,
                     zoo_variant=args.zoo_variant, results_dir=Path(args.results_dir), runs_dir=Path(args.runs_dir),
                     save=not args.no_save, force=args.force, progress=con.progress, command=command_line, log=con.log)
    recorded: list = []
    records = run_benchmark(req, recorded)
    from . import distributed

    if not distributed.is_main():  # under torchrun, rank 0 alone reports
        return 0
    con.summary(records, None if args.no_save else Path(args.results_dir), recorded)
    if args.push_to_hub:
        from .hub import push_results

        url, added = push_results(args.push_to_hub, Path(args.results_dir))
        con.log(f"pushed records to {url} ({added} new there)")
    return 0


def _cmd_merge_records(args: argparse.Namespace, con) -> int:
    from .record_merge import merge_record_files

    report = merge_record_files(args.folder, args.results_dir)
    for line in report.bad_lines:
        con.log(f"skipped: {line}")
    text = (f"merged {report.added} new record(s) into {args.results_dir} ({report.read - report.added} already "
            f"there) from {len(report.files)} file(s)"
            + (f"; {len(report.bad_lines)} line(s) were not valid records" if report.bad_lines else ""))
    con.done({"added": report.added, "read": report.read, "files": [str(p) for p in report.files],
              "bad_lines": report.bad_lines}, text)
    return 0


def _cmd_hub(args: argparse.Namespace, con) -> int:
    from . import hub

    if args.command == "push":
        url, added = hub.push_results(args.repo, Path(args.results_dir))
        con.done({"pushed": args.repo, "url": url, "new_on_hub": added},
                 f"pushed {args.results_dir} to {args.repo} ({added} record(s) new there, none dropped): {url}")
    elif args.command == "pull":
        n = hub.pull_results(args.repo, Path(args.results_dir))
        con.done({"pulled": args.repo, "new_records": n}, f"merged {n} new records from {args.repo} into {args.results_dir}")
    else:
        from .zoo_store import open_zoo

        zoo = open_zoo(args.name, variant=args.variant)
        url = hub.push_zoo(zoo.root, args.repo)
        con.done({"pushed": str(zoo.root), "url": url}, f"pushed zoo {zoo.name} ({zoo.root}) to {args.repo}: {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
