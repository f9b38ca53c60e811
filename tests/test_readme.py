"""README.md opens with the two commands; CI must run exactly the second one."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_readme_starts_with_a_run_command_and_a_test_command():
    run, test = _commands()
    assert "servesim run experiments/quickstart.yaml" in run
    assert "pytest" in test


def test_ci_runs_exactly_the_readme_test_command():
    _, test = _commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test in ci_lines
