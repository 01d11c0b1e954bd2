"""Hypothesis strategies shared by the fuzz tests: random bytes, any JSON, and near-valid messages.

Every fuzz test pins its own ``@settings`` (``derandomize=True``: the same cases on every run, in CI too) and
keeps ``max_examples`` small enough for a few seconds; ``REPORT`` counts cases and rejections per parser so a
run can print them (``pytest -s``) for docs/reliability.md.
"""

from __future__ import annotations

import collections
import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

REPORT: collections.Counter[str] = collections.Counter()


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


def encode(value: Any) -> bytes:
    """JSON bytes as Python writes them (NaN and Infinity included: a hostile sender can send them)."""
    return json.dumps(value).encode()


def hostile_json_texts() -> st.SearchStrategy[bytes]:
    """Payloads that are JSON-ish but nasty: deep nesting, huge numbers, other encodings, NaN."""
    depth = st.integers(min_value=1, max_value=60_000)
    return st.one_of(
        depth.map(lambda n: b"[" * n + b"]" * n),
        depth.map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.integers(min_value=300, max_value=100_000).map(lambda n: b'{"seq": 1' + b"0" * n + b"}"),
        st.sampled_from(
            [b"NaN", b'{"seq": NaN}', b'{"ts": Infinity}', b'{"ts": 1e999}', b'{"version": -1e400}']
        ),
        json_values.map(lambda v: json.dumps({"v": v}).encode("utf-16")),
        json_values.map(lambda v: json.dumps({"v": v}).encode("utf-32")),
        st.binary(max_size=300),
    )


def mutate(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with one field replaced by any JSON value, removed, or an extra field added."""
    keys = sorted(base)
    added = st.tuples(st.text(max_size=10), json_values).map(lambda kv: {**base, kv[0]: kv[1]})
    if not keys:
        return added
    replaced = st.tuples(st.sampled_from(keys), json_values).map(lambda kv: {**base, kv[0]: kv[1]})
    removed = st.sampled_from(keys).map(lambda k: {key: v for key, v in base.items() if key != k})
    return st.one_of(replaced, removed, added)


def payloads(base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """What the fuzz tests send to a parser: near-valid messages (nested objects mutated too), any JSON,
    hostile texts, random bytes."""
    nested = [st.tuples(st.just(k), mutate(v)).map(lambda kv: encode({**base, kv[0]: kv[1]}))
              for k, v in sorted(base.items()) if isinstance(v, dict) and v]
    return st.one_of(
        *nested,
        mutate(base).map(encode),
        st.tuples(mutate(base), mutate(base)).map(lambda ab: encode({**ab[0], **ab[1]})),
        json_values.map(encode),
        hostile_json_texts(),
    )
