"""Contention derived from a profile's own batch curve, where none could be measured
(``servesim profile contention PROFILE.csv --derive merged-batch --instances K``).

How much k instances of a model on one GPU slow one another only a profiler on that GPU
can tell (k CUDA streams at once, :mod:`workloads.contention`). A profile imported from
elsewhere (the H100 stage profiles, a published offline table) comes without that
measurement, and servesim refuses k > 1 rather than assume instances are free. This
module gives such a profile a contention table *derived* from what it did measure, and
labels it so: its ``source`` is ``derived: merged-batch from <profile>``, every run that
uses it says so in its summary and on the console, and it never replaces a measured
table.

The merged-batch rule: k concurrent batches of b items share the device as one merged
batch of k·b items would, so all k end when that batch would, and each is stretched by

    slowdown(k, b) = S(k·b) / S(b)

where S(b) is the profile's median time of a whole batch of b (its stages' medians
summed). Why this shape: a device that a batch of b leaves mostly idle (S flat in b, as
a launch- or latency-bound small batch on a large GPU) overlaps a second batch almost
for free, slowdown near 1; one that a batch of b already saturates (S linear through the
origin: the time is per item) can only serialise them, slowdown k. The rule assumes the
k streams' kernels overlap as well as one merged batch's do, with no interference of
their own (caches, memory bandwidth, scheduling between streams), so it is likely an
optimistic bound for the instances; a measured table is the answer.

S between measured sizes is linear in b, as :class:`~workloads.cost_model.CostModel`
interpolates a batch's time; where k·b is above the largest measured size it is extended
with the last measured per-item slope (the line through the two largest sizes, never
below the largest's time), as the cost model extrapolates: a guess about batches nobody
timed, which :func:`derive` reports. The table has a row per measured batch size of the
model (the sizes all its stages share); ``repeats`` is the fewest timed calls behind
any of the model's rows.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .contention import DERIVED, MAX_INSTANCES, ContentionTable, contention_path, write_contention
from .cost_model import CostModel, ProfileRangeWarning
from .profile import Profile, ProfileError, _atomic, load_profile

MERGED_BATCH = "merged-batch"
RULES = (MERGED_BATCH,)


@dataclass(frozen=True)
class Derived:
    """A derived table and the batch sizes whose merged batch lay beyond the profile
    (their S(k·b) extrapolated)."""

    table: ContentionTable
    extrapolated: tuple[int, ...]


def merged_batch_slowdown(cost: CostModel, instances: int, batch_size: int) -> float:
    """S(k·b) / S(b) for ``instances`` = k and ``batch_size`` = b, S the cost model's
    median batch time (module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProfileRangeWarning)  # beyond the profile: reported by derive()
        return cost.batch_latency(instances * batch_size) / cost.batch_latency(batch_size)


def derive(profile: Profile, hardware: str, model: str, instances: int, profile_name: str) -> Derived:
    """The merged-batch table of ``model`` on ``hardware`` for 2 to ``instances``
    instances, labelled as derived from ``profile_name``."""
    cost = CostModel(profile, model, hardware=hardware)
    rows = [r for r in profile.rows if r.model == model and r.hardware == hardware]
    by_stage = [{r.batch_size for r in rows if r.stage == stage} for stage in cost.stages]
    sizes = sorted(set.intersection(*by_stage))
    if not sizes:
        raise ProfileError(f"{profile.source}: model {model!r} on {hardware!r} has no batch size that all its stages "
                           f"measured; the merged-batch rule needs the whole model's time per batch size")
    slowdown = tuple(tuple(merged_batch_slowdown(cost, k, b) for b in sizes) for k in range(2, instances + 1))
    fewest = min(r.repeats for r in rows)
    table = ContentionTable(hardware, model, tuple(sizes), slowdown,
                            tuple((fewest,) * len(sizes) for _ in range(2, instances + 1)),
                            f"{DERIVED}{MERGED_BATCH} from {profile_name}")
    return Derived(table, tuple(b for b in sizes if instances * b > cost.max_profiled_batch))


def _instances(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 2 <= value <= MAX_INSTANCES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of instances from 2 to {MAX_INSTANCES}")
    return value


def main(argv: Optional[list[str]] = None, prog: str = "servesim profile contention") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="Write the contention table (X.contention.csv) of the profile X.csv, derived from its "
                               "own batch curve where no concurrent streams could be timed: labelled derived, never "
                               "a measurement (docs/PROFILES.md, 'Contention').")
    parser.add_argument("profile", help="the servesim profile CSV; its table is written beside it")
    parser.add_argument("--derive", required=True, choices=RULES,
                        help="merged-batch: k batches of b share the device as one batch of k*b would")
    parser.add_argument("--instances", required=True, type=_instances,
                        help="the most instances per device: the table covers 2 to this many")
    parser.add_argument("--model", help="derive for this model only (default: every model without a measured table)")
    parser.add_argument("--hardware", help="derive for this hardware only (default: every one)")
    args = parser.parse_args(argv)
    path = Path(args.profile)
    profile = load_profile(path)
    sidecar = contention_path(path)
    if args.model is not None and args.model not in profile.models():
        raise ProfileError(f"{path}: --model {args.model!r} is not in the profile; it has: "
                           f"{', '.join(profile.models())}")
    if args.hardware is not None and args.hardware not in profile.hardware(args.model):
        raise ProfileError(f"{path}: --hardware {args.hardware!r} did not run "
                           f"{'model ' + repr(args.model) if args.model else 'any model'} there; it has: "
                           f"{', '.join(profile.hardware(args.model))}")
    wanted = [(h, m) for m in ([args.model] if args.model else profile.models())
              for h in ([args.hardware] if args.hardware else profile.hardware(m)) if h in profile.hardware(m)]
    measured = [key for key in wanted if key in profile.contention and not profile.contention[key].derived]
    if args.model is not None and measured:
        hardware, model = measured[0]
        raise ProfileError(f"{sidecar}: model {model!r} on {hardware!r} has a measured contention table; a derived "
                           f"one never replaces a measurement (remove its rows to derive one)")
    todo = [key for key in wanted if key not in measured]
    if not todo:
        raise ProfileError(f"{sidecar}: every model chosen has a measured contention table; nothing to derive")
    tables = dict(profile.contention)
    for hardware, model in measured:
        print(f"{model} on {hardware}: kept its measured table")
    for hardware, model in todo:
        derived = derive(profile, hardware, model, args.instances, path.name)
        tables[hardware, model] = derived.table
        shown = ", ".join(f"b={b} {s:.3f}" for b, s in zip(derived.table.sizes, derived.table.slowdown[0]))
        beyond = (f"; S(k*b) extrapolated for b = {', '.join(map(str, derived.extrapolated))} (beyond the largest "
                  f"measured size, the last per-item slope)" if derived.extrapolated else "")
        print(f"{model} on {hardware}: slowdown at 2 instances {shown}{beyond}")
    try:  # the sidecar alone: the profile and its samples stay as they are
        _atomic(sidecar, lambda f: write_contention(f, tables))
    except OSError as exc:
        raise ProfileError(f"{sidecar}: cannot write ({exc.strerror or exc})") from None
    counts = "2" if args.instances == 2 else f"2 to {args.instances}"
    print(f"wrote {sidecar} ({DERIVED}{MERGED_BATCH} from {path.name}, {counts} instances): an "
          f"assumption from the profile's batch curve, not a measurement; runs that use it say so. Time k concurrent "
          f"streams on the device to replace it.")
    return 0
