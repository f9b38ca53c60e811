"""Experiment YAML shared by several test files (a module of helpers, importable from any
test folder: ``tests`` is on the path)."""


def digits_exits(name: str, seeds: str = "[1, 2]", count: int = 400) -> str:
    """The shipped digits early-exit network served on one CPU replica with its real
    behaviour table, Poisson at 150 req/s, exit policy ``never``: the head of a config that
    sweeps exit policies (append a ``sweep:``)."""
    return f"""\
name: {name}
seeds: {seeds}
trace: {{kind: poisson, rate: 150, count: {count}}}
model: {{profile: "builtin:cpu_digits_ee", name: digits_ee}}
serving: {{batching: {{policy: dynamic, max_batch: 16}}}}
exits:
  ramps: {{block1: ramp1, block2: ramp2, block3: ramp3}}
  behaviour: {{kind: builtin, name: digits_ee}}
  policy: never
"""
