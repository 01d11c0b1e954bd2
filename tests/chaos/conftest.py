"""The fuzz tests' counts (cases and rejections per parser), printed at the end of a run for
docs/reliability.md."""

from __future__ import annotations

from typing import Any

from tests.chaos.fuzz import REPORT


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORT:
        return
    terminalreporter.section("fuzz cases per parser (tests/chaos)")
    for name in sorted(REPORT):
        terminalreporter.write_line(f"{name:45s} {REPORT[name]:7d}")
