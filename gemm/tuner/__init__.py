"""The tuner: search spaces, runner, results log, selection, CLI."""
