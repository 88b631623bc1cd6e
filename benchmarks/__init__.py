"""Benchmarks of the hwr pipeline (not tests: they measure, they do not assert). See benchmarks.bench."""
