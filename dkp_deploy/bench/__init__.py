"""Benchmarks behind `dkp-bench`: ratios against a baseline measured in the same run, medians."""
