"""Benchmarks: each module ``benchmarks/<name>.py`` has ``run() -> str`` returning a Markdown section.

Figures are ratios against a bare baseline measured in the same run (the machine is shared and noisy).
"""
