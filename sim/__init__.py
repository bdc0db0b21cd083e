"""Deterministic simulation and the `letitcrash` command line."""
