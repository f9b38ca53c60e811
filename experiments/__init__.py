"""Orchestration: experiment YAML, registries, sweeps, results on disk, plots and the CLI."""
