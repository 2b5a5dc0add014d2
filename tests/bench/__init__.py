"""Benchmarks: run by `python -m tests.bench` (see README); never collected by the test run."""
