"""A warning for a sweep whose exit policy beats the full model on synthetic behaviour.

On a real early-exit network the final exit is, for all practical purposes, the most
accurate answer a policy can give. Synthetic behaviour (``exits.behaviour: {kind:
synthetic}``) with ``persistence`` below 1 lets an earlier exit be right on samples the
final exit gets wrong ("over-thinking"), and its confidences tell right from wrong sharply
enough for a confidence rule or T-Tamer's recall to pick exactly those samples: the
policy then scores above the full model, which a reader takes for a finding about the
policy when it is a setting of the generator. So after a sweep,
:func:`beats_full_model_warnings` names the runs that did so beyond sampling error, says
why, and how to change it.
"""

from __future__ import annotations

import math
from typing import Optional

from .config import Run

Z = 3.0  # standard errors an accuracy must lead by: one-sided, a false alarm about 1 in 740
NOT_COMPARED = ("never", "oracle")  # the full model itself, and a bound that reads the answer key


def beats_full_model_warnings(runs: list[Run], summaries: dict[str, dict]) -> list[str]:
    """One line per synthetic behaviour of the sweep under which some run's exit policy
    scored a higher accuracy than the full model, beyond ``Z`` standard errors.

    The full model is the ``never`` run of the same sweep point and seed (the same
    requests and samples), where the sweep has one; else the behaviour's own final-exit
    accuracy. Runs without a summary (failed) are skipped."""
    never = {_point(run): summaries[run.name] for run in runs
             if _synthetic(run) and run.config.exits.policy.name == "never" and run.name in summaries}
    leads: dict[str, list[tuple[float, str]]] = {}  # behaviour -> (lead in standard errors, description)
    compared: dict[str, int] = {}
    behaviours = {}
    for run in runs:
        if not _synthetic(run) or run.config.exits.policy.name in NOT_COMPARED or run.name not in summaries:
            continue
        key = repr(run.config.exits.behaviour)
        behaviours[key] = run.config.exits.behaviour
        compared[key] = compared.get(key, 0) + 1
        lead = _lead(run, summaries[run.name], never.get(_point(run)))
        if lead is not None:
            leads.setdefault(key, []).append(lead)
    lines = []
    for key, found in leads.items():
        behaviour = behaviours[key]
        causes = _causes(behaviour)
        if causes:  # neither cause: the lead is chance, however unlikely, not the generator
            lines.append(f"{len(found)} of {compared[key]} run(s) with synthetic behaviour (accuracy "
                         f"{behaviour.accuracy}) scored a higher accuracy than the full model beyond sampling "
                         f"error, which a real early-exit network seldom allows (most: {max(found)[1]}): "
                         + "; and ".join(causes))
    return lines


def _synthetic(run: Run) -> bool:
    exits = run.config.exits
    return exits is not None and exits.behaviour.kind == "synthetic"


def _point(run: Run) -> tuple:
    """The sweep point and seed a run shares with its ``never`` run: all but the policy."""
    return run.seed, tuple((k, repr(v)) for k, v in run.params.items() if not k.startswith("exits.policy"))


def _lead(run: Run, summary: dict, never: Optional[dict]) -> Optional[tuple[float, str]]:
    """How far ``run`` beat the full model in standard errors, and a few words on it;
    None where it did not beat it beyond ``Z`` of them.

    Against the ``never`` run (paired: the same samples), a request's correctness can
    differ from the final exit's only where its answer does, so the difference of the
    two accuracies has variance at most (1 - agreement) per draw. Against the configured
    final accuracy, an exact expectation, only the run's accuracy varies: acc (1 - acc)
    per draw. Requests draw their rows from a table of ``n_table`` rows, so both carry
    1/n + 1/n_table."""
    accuracy, n = summary.get("accuracy"), summary.get("completed") or 0
    if accuracy is None or n == 0:
        return None
    exits = run.config.exits
    samples = exits.behaviour.samples
    n_table = samples - round(exits.fit_fraction * samples)
    spread = 1 / n + 1 / n_table
    if never is not None and never.get("accuracy") is not None:
        full, against = never["accuracy"], "the never run's"
        variance = (1 - (summary.get("agreement") or 0.0)) * spread
    else:
        full, against = exits.behaviour.accuracy[-1], "the configured final exit's"
        variance = accuracy * (1 - accuracy) * spread
    error = math.sqrt(variance)
    if accuracy - full <= Z * error:
        return None
    return ((accuracy - full) / error if error else math.inf,
            f"{run.name} {accuracy:.3f} against {against} {full:.3f}, standard error {error:.3f}")


def _causes(behaviour) -> list[str]:
    """Why this synthetic behaviour lets a policy beat its final exit, and how to change
    it (none if it cannot)."""
    causes = []
    if behaviour.persistence < 1:
        causes.append(f"its persistence {behaviour.persistence:g} (below 1) lets an earlier exit be right on "
                      f"samples the final exit gets wrong, and a policy that stops on confident early answers "
                      f"(or recalls them) picks exactly those; set exits.behaviour.persistence: 1 (the default: "
                      f"a sample one exit gets right stays right at every later exit, so no policy can beat the "
                      f"full model), or keep yours to study over-thinking on purpose")
    final = behaviour.accuracy[-1]
    better = [j for j, a in enumerate(behaviour.accuracy[:-1]) if a > final]
    if better:
        causes.append(f"its accuracies make exit {better[0] + 1} more accurate than the final exit "
                      f"({behaviour.accuracy[better[0]]:g} > {final:g}); give exits.behaviour.accuracy in "
                      f"non-decreasing order unless you mean that")
    return causes
