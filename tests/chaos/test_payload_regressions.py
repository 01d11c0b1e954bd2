"""The failures the payload fuzz tests found, each pinned as a plain test (issue 14)."""

from __future__ import annotations

import json

import pytest

from cloud_sync.errors import PayloadError
from cloud_sync.messages import RESULT_SCHEMA, decode_json, validate_result, validate_telemetry
from cloud_sync.update_protocol import ChunkRequest, Offer, Status

RESULT = {"schema": RESULT_SCHEMA, "id": "0123456789abcdef", "device": "cam1", "stream": "s1", "seq": 1,
          "ts": 1.5, "model": {}}
SHA = "b" * 64
OFFER = {"schema": 1, "name": "m", "version": 2, "size": 10, "sha256": SHA, "chunk_size": 1024,
         "chunk_sha256": [SHA], "signature": "x"}


@pytest.mark.parametrize("payload", [b"[" * 5000 + b"]" * 5000, b'{"a":' * 5000 + b"1" + b"}" * 5000])
def test_deep_nesting_is_a_payload_error_not_a_recursion_error(payload: bytes) -> None:
    with pytest.raises(PayloadError, match="nested too deeply"):
        decode_json(payload, "edge/cam1/results")
    with pytest.raises(PayloadError, match="nested too deeply"):
        ChunkRequest.from_bytes(payload)


def test_utf16_json_is_refused_where_the_collector_would_fail_to_store_it_as_text() -> None:
    with pytest.raises(PayloadError, match="not JSON"):
        decode_json(json.dumps(RESULT).encode("utf-16"), "edge/cam1/results")


@pytest.mark.parametrize("text", [b'{"state": "idle", "version": Infinity}',
                                  b'{"state": "idle", "ts": 1e999}', b'{"state": "idle", "progress": NaN}'])
def test_non_finite_numbers_are_refused(text: bytes) -> None:
    with pytest.raises(PayloadError, match="not JSON"):
        Status.from_bytes(text)  # was: OverflowError from int(inf)
    with pytest.raises(PayloadError, match="not JSON"):
        decode_json(text, "edge/cam1/cmd/replay/reply")  # was: int(inf) in the collector's replay reply


def test_seq_past_sqlite_integer_is_refused() -> None:
    """A seq SQLite cannot store failed the whole batch of good results it was written with."""
    with pytest.raises(PayloadError, match="seq"):
        validate_result({**RESULT, "seq": 2**63}, "edge/cam1/results")
    with pytest.raises(PayloadError, match="seq"):
        validate_telemetry({"schema": "edge.telemetry/1", "seq": 2**64}, "edge/cam1/telemetry")
    assert validate_result({**RESULT, "seq": 2**63 - 1}, "t")["seq"] == 2**63 - 1


@pytest.mark.parametrize("value", [None, "soon", [1], {"t": 1}, True])
def test_offer_published_at_must_be_a_number(value: object) -> None:
    with pytest.raises(PayloadError, match="published_at"):  # was: TypeError/ValueError from float()
        Offer.from_bytes(json.dumps({**OFFER, "published_at": value}).encode(), 1 << 20)
    assert Offer.from_bytes(json.dumps({**OFFER, "published_at": 3}).encode(), 1 << 20).published_at == 3.0


@pytest.mark.parametrize("active", [{"name": "m", "version": "2"}, {"name": None, "version": 2},
                                    {"version": 1.5}])
def test_status_active_needs_a_string_name_and_an_integer_version(active: dict[str, object]) -> None:
    """The collector reads int(active['version']): a string there raised ValueError in its network thread."""
    with pytest.raises(PayloadError, match="status.active"):
        Status.from_bytes(json.dumps({"state": "active", "active": active}).encode())


def test_a_device_never_sends_nan_the_collector_would_refuse() -> None:
    """A broken model's NaN score is sent as null (strict JSON), so its result is stored, not refused."""
    from cloud_sync.messages import build_result, dumps

    message = build_result({"model": {}, "top": [{"score": float("nan")}, {"score": float("inf")}, 0.5]},
                           device="cam1", stream="s1", seq=1)
    body = validate_result(decode_json(dumps(message), "edge/cam1/results"), "edge/cam1/results")
    assert body["top"] == [{"score": None}, {"score": None}, 0.5]
    assert dumps({"a": 1.5}) == b'{"a":1.5}'


def test_an_offer_nested_deep_is_rejected_with_a_status(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """describe_offer() once hit RecursionError after Offer.from_bytes refused it: no status went out."""
    from cloud_sync.update_agent import UpdateAgent
    from edge.signing import TrustStore
    from edge.store import ModelStore

    published: list[tuple[str, bytes]] = []

    class Transport:
        def subscribe(self, topic_filter, handler, qos=1):  # type: ignore[no-untyped-def]
            pass

        def publish(self, topic, payload, qos=1, retain=False):  # type: ignore[no-untyped-def]
            published.append((topic, payload))

    agent = UpdateAgent(Transport(), ModelStore(tmp_path), TrustStore.from_files([]), None, "cam1")  # type: ignore[arg-type]
    agent._handle_offer("edge/cam1/model/offer", b"[" * 5000 + b"]" * 5000)
    assert agent.malformed == 1 and agent.status.state == "rejected" and "offer" in agent.status.reason
    assert published and published[-1][0] == "edge/cam1/model/status"


def test_a_huge_seq_does_not_make_the_gap_check_build_a_huge_range(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A valid seq of 10^12 (a device's counter after a bug, or a hostile one) once made check_gaps
    enumerate every seq below it; it now looks at one window at a time."""
    from cloud_sync.collector import GAP_SCAN, Collector, StreamState
    from cloud_sync.store import open_store

    store = open_store(str(tmp_path / "fleet.sqlite"))
    try:
        store.insert([("a" * 16, "cam", "s", 1, 1.0, "{}"), ("b" * 16, "cam", "s", 10**12, 2.0, "{}")])
        collector = Collector(None, store, repair=False)  # type: ignore[arg-type]  (no broker: the check only)
        collector.streams[("cam", "s")] = StreamState("cam", "s", top=10**12)
        missing = collector.check_gaps()[("cam", "s")]
        assert missing == list(range(2, GAP_SCAN + 1))  # the first window, not 10^12 seqs
        state = collector.streams[("cam", "s")]
        assert state.watermark == 1 and state.top == 10**12
    finally:
        store.close()
