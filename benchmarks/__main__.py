"""``python -m benchmarks [NAME ...]``: run benchmarks and rewrite their sections of docs/performance.md.

Each section sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; text outside the markers
(the commentary) is kept.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from pathlib import Path

import benchmarks

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + f"\n\n## {name}\n\n{block}\n"


def main(argv: list[str]) -> int:
    found = pkgutil.iter_modules(benchmarks.__path__)
    names = argv or sorted(m.name for m in found if not m.name.startswith("_"))
    for name in names:
        print(f"== benchmark {name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        body = module.run()
        print(body, flush=True)
        # Re-read just before writing: a long benchmark must not overwrite sections written meanwhile.
        text = DOC.read_text() if DOC.exists() else "# Performance\n"
        DOC.write_text(replace_section(text, name, body))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
