"""Benchmarks: scripts that print tables; figures in bench/README.md."""
