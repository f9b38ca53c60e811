"""The ``servesim`` command line: run, check, plot, fronts, seeds, trace-stats, profiles, capacity, fidelity, profile,
profile-served.

Every user error (bad YAML, bad trace, unknown name, missing file) prints one line per
problem — what, where, how to fix — and exits with status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from servesim import __version__
from servesim.traces import FORMATS, describe, load as load_trace

from . import answer, capacity_report, perf_compare, profile_list, store
from .cluster_runner import ceiling_warnings
from .config import load
from .executors import EXECUTORS, LOCAL
from .fronts import LATENCIES, write_fronts
from .plots import plot_experiment
from .runner import USER_ERRORS, check, run_experiment
from .seeds import shown, write_seeds


def _run(args) -> int:
    out = Path(args.out) if args.out else Path("runs") / Path(args.file).stem
    outcome = run_experiment(args.file, out, jobs=args.jobs, seed=args.seed, force=args.force, resume=args.resume,
                             executor=args.executor, address=args.address, show_progress=not args.quiet,
                             warn=lambda line: print(f"warning: {line}", file=sys.stderr))
    ok = [r for r in outcome.rows if r["status"] == "ok"]
    if ok:
        plot_experiment(out)
    for row in outcome.rows:
        if row["status"] != "ok":
            print(f"{row['run']}: FAILED: {row['error']}", file=sys.stderr)
        elif row["out_of_range_lookups"]:
            print(f"{row['run']}: warning: {row['out_of_range_lookups']} stage-latency look-ups fell "
                  f"outside the profiled batch sizes (handled as model.out_of_range says); "
                  f"see profile_out_of_range in its summary.json", file=sys.stderr)
    overloaded = [row["run"] for row in ok if row["overloaded"]]
    if overloaded:
        print(f"warning: {len(overloaded)} of {len(ok)} runs OVERLOADED (fell behind their arrivals): "
              + ", ".join(overloaded[:3]) + (" ..." if len(overloaded) > 3 else ""), file=sys.stderr)
    interpolated = [row for row in ok if row["interpolated_batches"]]
    if interpolated:  # one line for the sweep: it is about the profile, not one run
        share = sum(r["interpolated_batches"] for r in interpolated) / sum(r["requests"] for r in interpolated)
        print(f"warning: {len(interpolated)} of {len(ok)} runs ran batches at sizes the profile did not measure, "
              f"where its own points put the interpolation error at 5% or more (about {share:.0%} as many such "
              f"batches as requests); see profile_interpolation in their summary.json, or profile those sizes",
              file=sys.stderr)
    if not args.quiet:  # the answer: a line per sweep point
        for line in answer.lines(outcome.points, any("adapter" in r for r in ok), str(out / store.RESULTS_BY_POINT)):
            print(line)
        for line in answer.perf_lines(outcome.perf, str(out / store.PERF_ANALYZER)):  # a sweep with clients
            print(line)
    reused = f" ({outcome.reused} kept from an earlier run)" if outcome.reused else ""
    print(f"{len(ok)} of {len(outcome.rows)} runs finished{reused}; results in {out / store.RESULTS} "
          f"(by point: {store.RESULTS_BY_POINT}), plots in {out / 'plots'}")
    return 1 if outcome.failed else 0


def _num(value, spec: str) -> str:
    """A number for the run's one-line report; 'n/a' where the run has none (no request completed)."""
    return "n/a" if value is None else format(value, spec)


def _check(args) -> int:
    runs = check(args.file)
    print(f"{args.file}: OK, {len(runs)} run(s): " + ", ".join(r.name for r in runs[:10])
          + (" ..." if len(runs) > 10 else ""))
    for line in ceiling_warnings(runs):
        print(f"warning: {line}", file=sys.stderr)
    refine = load(args.file).refine
    if refine is not None:
        print(f"then up to {refine.rounds} round(s) refining {refine.key} ({', '.join(refine.fields)}) where "
              f"neighbours differ by > {refine.accuracy_step:g} accuracy and > {refine.latency_step:.0%} "
              f"{' or '.join(refine.latencies)} latency")
    return 0


def _plot(args) -> int:
    for path in plot_experiment(args.dir):
        print(path)
    return 0


def _fronts(args) -> int:
    path, table = write_fronts(args.dir, args.policy, tuple(args.rival), args.latency)
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 60):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"table in {path}")
    return 0


def _seeds(args) -> int:
    path, table = write_seeds(args.dir)
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 70):
        print(shown(table).to_string(index=False))
    print(f"table in {path} (mean, 95% confidence half-width over seeds, min, max)")
    return 0


def _trace_stats(args) -> int:
    options = {"bin_seconds": args.bin_seconds} if args.bin_seconds else {}
    trace = load_trace(args.file, args.format, rng=np.random.default_rng(args.seed), **options)
    stats = {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in describe(trace).items()}
    print(json.dumps(stats, indent=2, allow_nan=False))  # strict JSON: undefined values are null
    return 0


def _profile(args) -> int:
    """Hand the options to the torch profiler (kernel or served), imported only now:
    servesim runs without torch, and each profiler's own parser stays the one definition
    of its options. ``servesim profile import`` and ``servesim profile contention`` need no
    torch: they convert a CSV, and derive a contention table from one."""
    if args.command == "profile" and args.profiler_args[:1] == ["import"]:
        from servesim.workloads.profile_import import main as import_profile  # noqa: PLC0415

        return import_profile(args.profiler_args[1:])
    if args.command == "profile" and args.profiler_args[:1] == ["contention"]:
        from servesim.workloads.derived_contention import main as derive_contention  # noqa: PLC0415

        return derive_contention(args.profiler_args[1:])
    try:
        if args.command == "profile":
            from servesim.workloads.profiler_torch import main as profile
        else:
            from .profile_served import main as profile
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        print("servesim: error: profiling needs torch: pip install 'servesim[real]'", file=sys.stderr)
        return 2
    return profile(args.profiler_args, prog=f"servesim {args.command}")


def _fidelity(args) -> int:
    try:
        import torch  # noqa: F401, PLC0415  (the `real` extra)
    except ImportError:
        print("servesim: error: the real executor needs torch: pip install 'servesim[real]'", file=sys.stderr)
        return 2
    from .fidelity import FIDELITY, run_fidelity  # noqa: PLC0415

    out = Path(args.out) if args.out else Path("runs") / f"{Path(args.file).stem}-fidelity"
    for row in run_fidelity(args.file, out, show_progress=not args.quiet):
        print(f"{row['run']}: p50 sim {_num(row['sim_p50'], '.3f')} / real {_num(row['real_p50'], '.3f')} ms "
              f"(error {_num(row['p50_rel_error'], '+.1%')}), p99 sim {_num(row['sim_p99'], '.3f')} / real "
              f"{_num(row['real_p99'], '.3f')} ms (error {_num(row['p99_rel_error'], '+.1%')}), throughput error "
              f"{_num(row['throughput_rel_error'], '+.1%')}"
              + (f"; real runs p50 {row['real_p50_min']:.3f}-{row['real_p50_max']:.3f}, p99 "
                 f"{row['real_p99_min']:.3f}-{row['real_p99_max']:.3f} ms" if "real_p50_min" in row else ""))
    print(f"table in {out / FIDELITY}; CDF overlays in each point's folder")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="servesim", description="Simulate ML serving: latency, accuracy and cost.",
                                epilog="Every key of an experiment YAML: docs/CONFIG.md. The files servesim reads "
                                       "(trace formats, profile CSV, behaviour .npz): docs/FORMATS.md. Shipped "
                                       "profiles: servesim profiles.")
    p.add_argument("--version", action="version", version=f"servesim {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an experiment (all sweep points and seeds)")
    run.add_argument("file", help="experiment YAML")
    run.add_argument("--out", help="output folder (default: runs/<file stem>)")
    run.add_argument("--jobs", type=int, help="runs at a time (local: processes, default 1; ray: CPUs of the local "
                                              "Ray instance it starts, default all)")
    run.add_argument("--executor", choices=EXECUTORS, default=LOCAL,
                     help="where runs execute: local processes (default) or Ray (the `ray` extra)")
    run.add_argument("--address", help="with --executor ray: the Ray cluster to use (default: start a local one)")
    run.add_argument("--seed", type=int, help="run this one seed instead of the file's seeds")
    run.add_argument("--resume", action="store_true", help="keep the runs --out lists as finished; run the rest")
    run.add_argument("--force", action="store_true", help="recompute runs already finished in --out")
    run.add_argument("--quiet", action="store_true", help="no progress bars and no line per run: only warnings, "
                                                          "failures and the closing line")
    run.set_defaults(handler=_run)

    chk = sub.add_parser("check", help="validate an experiment without running it",
                         description="Validate an experiment YAML and everything it names (trace files, profiles, "
                                     "behaviour tables, adapters) without running it: one line per problem, or the "
                                     "runs it would make.")
    chk.add_argument("file", help="experiment YAML")
    chk.set_defaults(handler=_check)

    plot = sub.add_parser("plot", help="(re)draw the plots of an output folder",
                          description="(Re)draw the plots of an output folder of `servesim run` into its plots/.")
    plot.add_argument("dir", help="an output folder of `servesim run` (it holds results.csv)")
    plot.set_defaults(handler=_plot)

    fronts = sub.add_parser("fronts", help="compare one exit policy's accuracy/p50 front with others' "
                                           "(run by run, seeds paired) in an output folder")
    fronts.add_argument("dir")
    fronts.add_argument("--policy", default="ttamer", help="the policy under test (default: ttamer)")
    fronts.add_argument("--rival", nargs="+", default=["optimal_no_recall", "confidence"],
                        help="the policies whose points it should match (default: optimal_no_recall confidence)")
    fronts.add_argument("--latency", choices=sorted(LATENCIES), default="p50",
                        help="the latency axis (default p50; mean is what fitted stopping rules minimise)")
    fronts.set_defaults(handler=_fronts)

    seeds = sub.add_parser("seeds", help="average each sweep point of an output folder over its seeds "
                                         "(mean, 95%% confidence interval, range)")
    seeds.add_argument("dir")
    seeds.set_defaults(handler=_seeds)

    stats = sub.add_parser("trace-stats", help="summarise a trace file",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="formats (each with an example in docs/FORMATS.md):\n" + "\n".join(
                               f"  {name:16} {spec.description}" for name, spec in sorted(FORMATS.items())))
    stats.add_argument("file", help="the trace file")
    stats.add_argument("--format", required=True, choices=sorted(FORMATS), help="the file's format, below")
    stats.add_argument("--bin-seconds", type=float, help="bin width of a count format (default: its own)")
    stats.add_argument("--seed", type=int, default=0, help="seed for spreading counts into arrivals")
    stats.set_defaults(handler=_trace_stats)

    cap = sub.add_parser("capacity", help="find the highest rate meeting an SLO, or the fewest replicas that do",
                         description="Search one config (each sweep point on its own) for the highest arrival rate "
                                     "whose latency meets the SLO, or the fewest replicas (cores) that meet it, by "
                                     "bracketing and bisection; every probe runs --seeds seeds and is judged by "
                                     "their mean and its 95% t-interval (docs/CONFIG.md, 'Capacity search').")
    cap.add_argument("file", help="experiment YAML")
    cap.add_argument("--slo", required=True, help="p50|p90|p95|p99|pNN.N|mean <= N ms|s (p99<=50ms, 'p99 <= 0.05s'), "
                                                  "or violations<=N%% (requests later than the file's slo_ms)")
    cap.add_argument("--vary", help="trace.rate (default where the trace has one), trace.scale_rate, "
                                    "serving.replicas, replicas, or cluster.initial.TASK.K.replicas|cores")
    cap.add_argument("--seeds", type=int, default=3, help="seeds per probe (default 3; the file's first)")
    cap.add_argument("--tol", type=float, default=0.02, help="relative tolerance of a rate (default 0.02)")
    cap.add_argument("--jobs", type=int, help="runs at a time (local processes, default 1)")
    cap.add_argument("--out", help="output folder (default: runs/<file stem>-capacity)")
    cap.add_argument("--quiet", action="store_true", help="no line per probe")
    cap.set_defaults(handler=capacity_report.command)

    profiles = sub.add_parser("profiles", help="list the shipped profiles (builtin:NAME), or the profile files "
                                               "given: device, dtype, framework, date, hardware, models")
    profiles.add_argument("paths", nargs="*", help="profile CSVs or folders of them (default: the shipped ones)")
    profiles.add_argument("--stages", action="store_true", help="each model's stages by name, not counted")
    profiles.set_defaults(handler=profile_list.command)

    fid = sub.add_parser("fidelity", help="run an experiment in the simulator and on the real executor, "
                                          "and report the simulator's errors (needs torch)")
    fid.add_argument("file", help="experiment YAML with a 'real:' section")
    fid.add_argument("--out", help="output folder (default: runs/<file stem>-fidelity)")
    fid.add_argument("--quiet", action="store_true", help="no progress bar")
    fid.set_defaults(handler=_fidelity)

    compare = sub.add_parser("perf-compare", help="put a simulated concurrency sweep (its perf_analyzer.csv) beside "
                                                  "a measured perf_analyzer or published online table, with the "
                                                  "simulator's relative errors")
    perf_compare.add_arguments(compare)
    compare.set_defaults(handler=perf_compare.command)

    # Its options (--model, --device, --dtype, --out, ...) are the profiler's: see main().
    prof = sub.add_parser("profile", add_help=False,
                          help="time a real PyTorch model's stages and ramps into a profile CSV (needs torch; "
                               "servesim profile --help); `servesim profile import FILE` converts a per-stage "
                               "timing CSV measured elsewhere, or with --format perf-analyzer|offline-table an "
                               "offline latency-per-batch table; `servesim profile contention FILE --derive "
                               "merged-batch --instances K` derives its instances' contention, labelled as derived "
                               "(docs/PROFILES.md)")
    prof.set_defaults(handler=_profile)
    served = sub.add_parser("profile-served", add_help=False,
                            help="time a real model as the real executor serves it, host time included, into a "
                                 "profile CSV (needs torch; servesim profile-served --help)")
    served.set_defaults(handler=_profile)
    return p


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args, rest = cli.parse_known_args(argv)
    if args.command in ("profile", "profile-served"):
        args.profiler_args = rest
    elif rest:
        cli.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.handler(args)
    except USER_ERRORS as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"servesim: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("servesim: interrupted; finished runs are kept in the output folder", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
