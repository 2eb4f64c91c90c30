"""Benchmarks that ship with the library (``preempt bench``): measurements anyone can rerun."""
