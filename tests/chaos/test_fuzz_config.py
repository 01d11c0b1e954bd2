"""Hostile config files (issue 14): ``check_config`` on random TOML, random text and mutated real configs.

It returns (config or None, errors), each error one line naming the key; ``load_config`` raises only
``ConfigError``. Nothing else escapes, whatever the file holds.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edge.config import KEYS, SOURCE_KEYS, check_config, load_config
from edge.errors import ConfigError
from tests.chaos.fuzz import REPORT, fuzz_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "devices" / "example-device.toml").read_text()


def toml_value(value: Any) -> str:
    """A TOML literal for ``value`` (a tiny emitter: the stdlib reads TOML but does not write it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) \
            else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}"
                           for k, v in value.items()) + "}"


toml_scalars = (st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats()
                | st.text(max_size=30) | st.sampled_from(["", "/dev/video0", "mqtt://h:1", "..", "tcp"]))
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
key_names = st.sampled_from([k.name for k in KEYS]) | st.text(min_size=1, max_size=12)


EXAMPLE_PAIRS = [(f"{section}.{key}", value) for section, table in tomllib.loads(EXAMPLE).items()
                 if isinstance(table, dict) for key, value in table.items()]
EXAMPLE_PAIRS += [(key, value) for key, value in tomllib.loads(EXAMPLE).items() if not isinstance(value, dict)
                  and not (isinstance(value, list) and value and isinstance(value[0], dict))]


@st.composite
def toml_documents(draw: st.DrawFn) -> str:
    """The example's own (valid) keys and values, a few dropped, a few set to random values or added."""
    lines: list[str] = []
    sections: dict[str, list[str]] = {}
    dropped = draw(st.sets(st.sampled_from([k for k, _ in EXAMPLE_PAIRS]), max_size=3))
    pairs = [(k, v) for k, v in EXAMPLE_PAIRS if k not in dropped]
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        pairs.insert(0, (draw(key_names), draw(toml_values)))
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            continue
        seen.add(name)
        section, _, key = name.rpartition(".")
        quoted = json.dumps(key, ensure_ascii=False)
        sections.setdefault(section, []).append(f"{quoted} = {toml_value(value)}")
    for section, entries in sorted(sections.items(), key=lambda item: item[0] != ""):  # top level first
        if section:
            lines.append(f"[{json.dumps(section, ensure_ascii=False)}]")
        lines.extend(entries)
    for table in ("source", "zone"):
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
            lines.append(f"[[{table}]]")
            keys = st.sampled_from(sorted(SOURCE_KEYS) + ["name", "points", "labels", "x"])
            for key in draw(st.lists(keys, max_size=4, unique=True)):
                lines.append(f"{key} = {toml_value(draw(toml_values))}")
    return "\n".join(lines) + "\n"


def _check(tmp_path: Path, text: str | bytes, what: str) -> None:
    path = tmp_path / "device.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    REPORT[f"config {what}: cases"] += 1
    config, errors = check_config(path)
    assert all(isinstance(e, str) and e and "\n" not in e.strip() for e in errors), errors
    if errors:
        REPORT[f"config {what}: rejected"] += 1
        try:
            load_config(path)
        except ConfigError as exc:
            assert str(exc)
        else:
            raise AssertionError("load_config accepted a config check_config refused")
    else:
        assert config is not None


@fuzz_settings(400)
@given(text=toml_documents())
def test_random_toml(tmp_path_factory: Any, text: str) -> None:
    _check(tmp_path_factory.mktemp("cfg"), text, "random TOML")


@fuzz_settings(300)
@given(edits=st.lists(st.tuples(st.integers(0, len(EXAMPLE)), st.integers(0, 20),
                                st.text(max_size=10)), min_size=1, max_size=4))
def test_mutated_example(tmp_path_factory: Any, edits: list[tuple[int, int, str]]) -> None:
    text = EXAMPLE
    for at, cut, insert in edits:
        text = text[:at] + insert + text[at + cut :]
    _check(tmp_path_factory.mktemp("cfg"), text, "mutated example")


@fuzz_settings(200)
@given(data=st.binary(max_size=500))
def test_random_bytes(tmp_path_factory: Any, data: bytes) -> None:
    _check(tmp_path_factory.mktemp("cfg"), data, "random bytes")
