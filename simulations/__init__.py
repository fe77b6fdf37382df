"""Benchmarks and utility studies that run fedmodel end to end; scripts, not tests."""
