"""Outbox bounds with the broker out of reach for a simulated week (issue 14).

A device produces one result a simulated minute for 8 days (a fake clock in the outbox: ``clock=``) while a
fault proxy refuses its connections; the policy: none older than ``max_age_s`` (7 days), at most
``max_bytes`` pending, oldest dropped first, drops counted. Then the link comes back: a real collector on a
real mosquitto stores every result kept, asks for the gap, and the device's replay reply lists the dropped
seqs as ``missing``: the collector records them as lost ranges. Nothing kept is lost, nothing duplicated.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.collector import Collector
from cloud_sync.commands import Commands
from cloud_sync.connection import MqttConnection, parse_broker_url
from cloud_sync.messages import build_result, dumps
from cloud_sync.outbox import Outbox, OutboxPolicy
from cloud_sync.store import open_store
from cloud_sync.topics import DeviceTopics
from tests.faultproxy import fault_proxy  # noqa: F401  (fixture)

DAY = 24 * 3600.0
MINUTE = 60.0


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_week_away_drops_oldest_first_and_the_collector_records_them_lost(
    tmp_path: Path, mosquitto: Any, fault_proxy: Any, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    caplog.set_level(logging.WARNING, logger="cloud_sync.outbox")
    proxy = fault_proxy(mosquitto)
    proxy.refuse(True)  # the device's link is down from the start
    clock = FakeClock(time.time() - 9 * DAY)
    policy = OutboxPolicy(max_bytes=8 * 1024 * 1024, max_age_s=7 * DAY, housekeeping_s=0.05)
    topics = DeviceTopics("edge", "cam1")
    device = MqttConnection(parse_broker_url(proxy.url), "edge-cam1", reconnect_max=1).start(require=False)
    outbox = Outbox(tmp_path / "state", policy, clock=clock).start(device)
    commands = Commands(device, topics, pipeline=None, outbox=outbox, emit=lambda r: None,
                        last_input=lambda: None)
    store = open_store(str(tmp_path / "results.sqlite"))
    collector = Collector(MqttConnection(parse_broker_url(mosquitto.url), "collector"), store,
                          check_interval_s=0.3, replay_retry_s=0.5).start()
    produced = 0
    peak_bytes = 0
    try:
        # 8 days of a small result a minute, then 2.4 busy hours of 40 kB ones (the size bound bites).
        for minute in range(int(8 * DAY / MINUTE)):
            size = 40_000 if minute > int(7.9 * DAY / MINUTE) else 200
            seq = outbox.reserve_seq()
            record = {"model": {"name": "m", "version": 1}, "top": [], "pad": "x" * size}
            message = build_result(record, device="cam1", stream=outbox.stream, seq=seq)
            message["ts"] = round(clock.now, 3)
            outbox.add(topics.results, dumps(message), seq=seq)
            produced += 1
            clock.now += MINUTE
            if minute % 500 == 0:
                time.sleep(0.06)  # let housekeeping see the simulated day
                peak_bytes = max(peak_bytes, outbox.stats().pending_bytes)
        time.sleep(0.3)
        _wait(lambda: outbox.stats().pending <= produced, 10, "the writer")
        away = outbox.stats()
        assert away.oldest_age_s is not None and away.oldest_age_s <= 7 * DAY  # the age bound held
        assert away.pending_bytes <= policy.max_bytes and peak_bytes <= policy.max_bytes
        assert away.dropped > 0 and away.pending + away.dropped == produced

        proxy.refuse(False)  # the link is back
        _wait(lambda: outbox.stats().pending == 0, 60, "the outbox to drain")
        stream = outbox.stream
        _wait(lambda: not collector.check_gaps().get(("cam1", stream)) and store.lost("cam1", stream),
              60, "the collector to repair the gap")
    finally:
        collector.close()
        commands.close()
        outbox.close()
        device.close()
    stored = store.seqs_above("cam1", outbox.stream, 0)
    lost = store.lost("cam1", outbox.stream)
    dropped = away.dropped
    assert stored == list(range(dropped + 1, produced + 1))  # every kept one, once, the newest kept
    assert lost == [(1, dropped)]  # the oldest were dropped first, recorded as one lost range
    assert collector.stats.duplicates == 0
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    by_age = sum(int(m.group(1)) for line in lines if (m := re.search(r"dropped (\d+) .*older than", line)))
    by_size = sum(int(m.group(1)) for line in lines if (m := re.search(r"dropped (\d+) .*size bound", line)))
    assert by_age > 0 and by_size > 0 and by_age + by_size == dropped
    print(f"\nweek away: produced {produced}, kept {produced - dropped}, dropped {dropped} "
          f"({by_age} by age, {by_size} by size), peak pending {peak_bytes} bytes, lost range {lost}")
