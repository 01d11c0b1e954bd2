"""An offer withdrawn while the device was away (offline, or restarting): the empty retained message that
withdraws it never reaches the device, so after each connect the agent checks that what it is working on is
still offered. Real mosquitto, a fault proxy for the device's link, the real agent and store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.connection import Message
from cloud_sync.publisher import make_offer
from cloud_sync.update_agent import UpdateAgent
from cloud_sync.update_protocol import chunk_topic
from edge.signing import TrustStore
from edge.store import ModelStore
from tests.assets import Assets
from tests.broker import Broker
from tests.cloud_sync.helpers import wait_for
from tests.cloud_sync.update_support import (
    Device,
    PackageActivator,
    make_keys,
    publishing,
    start_device,
    watching,
)
from tests.edge.update_packages import make_package
from tests.faultproxy import ProxyFactory, fault_proxy  # noqa: F401 (the fixture)

RECHECK = 1.0


def held_device(url: str, state: Path, pub: Path) -> Device:
    """A device that holds offers for approval and checks its offers 1 s after each connect."""
    return start_device(url, state, "porch", [pub], approve=True, recheck_seconds=RECHECK)


def hold_then_stop(url: str, state: Path, pub: Path, publisher: Any) -> None:
    """The device holds the publisher's offer for approval, then stops (a restart's first half)."""
    device = held_device(url, state, pub)
    try:
        publisher.offer_devices(["porch"])
        wait_for(lambda: device.agent.status.state == "held", what="offer held for approval")
    finally:
        device.close()


def test_a_held_offer_withdrawn_during_a_restart_is_no_longer_held(
    assets: Assets, mosquitto: Broker, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys")
    package = keys.sign(make_package(assets.model("digits_int8"), 2))
    state = tmp_path / "state"
    with watching(mosquitto.url) as statuses, publishing(mosquitto.url, package) as publisher:
        hold_then_stop(mosquitto.url, state, keys.pub, publisher)
        publisher.withdraw(["porch"])  # while the device is down: it never sees the empty message
        time.sleep(0.5)
        device = held_device(mosquitto.url, state, keys.pub)
        try:
            assert device.agent.status.state == "held"  # what it had saved, until the offers are in
            wait_for(lambda: device.agent.status.state == "idle", timeout=10, what="held status dropped")
            assert device.agent.status.reason == "offer withdrawn"
            wait_for(lambda: statuses.last("porch").state == "idle", what="idle published")  # type: ignore[union-attr]
            assert device.activator.activated == []
        finally:
            device.close()


def test_an_offer_still_there_after_a_restart_stays_held_and_installs(
    assets: Assets, mosquitto: Broker, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys")
    package = keys.sign(make_package(assets.model("digits_int8"), 2))
    state = tmp_path / "state"
    with publishing(mosquitto.url, package) as publisher:
        hold_then_stop(mosquitto.url, state, keys.pub, publisher)
        device = held_device(mosquitto.url, state, keys.pub)
        try:
            time.sleep(RECHECK + 1.0)  # past the check: the retained offer came back, so it is held again
            assert device.agent.status.state == "held" and device.agent._held is not None
            device.connection.publish("edge/porch/model/install", b"{}", qos=1)
            assert publisher.wait(["porch"], time.monotonic() + 60), publisher.rollout.devices["porch"]
            assert [entry.version for entry in device.activator.activated] == [2]
        finally:
            device.close()


def test_a_transfer_whose_offer_is_withdrawn_while_offline_stops_and_resumes_if_offered_again(
    assets: Assets, mosquitto: Broker, fault_proxy: ProxyFactory, tmp_path: Path  # noqa: F811
) -> None:
    proxy = fault_proxy(mosquitto)
    proxy.set_bandwidth(20_000)  # slow enough to go away mid-transfer
    keys = make_keys(tmp_path / "keys")
    package = keys.sign(make_package(assets.model("digits_float32"), 3))
    state = tmp_path / "state"
    device: Device | None = None
    with publishing(mosquitto.url, package, chunk_size=1024) as publisher:
        try:
            device = start_device(proxy.url, state, "porch", [keys.pub], recheck_seconds=RECHECK)
            agent: UpdateAgent = device.agent
            publisher.offer_devices(["porch"])
            wait_for(lambda: agent.chunks_received >= 20, timeout=60, what="the transfer under way")
            proxy.refuse(True)
            proxy.cut_all("rst")  # the device is offline...
            publisher.withdraw(["porch"])  # ...when the offer is withdrawn
            time.sleep(0.5)
            proxy.refuse(False)
            wait_for(lambda: agent.status.state == "idle", timeout=30, what="transfer stopped")
            assert agent.status.reason == "offer withdrawn" and agent._transfer is None
            staged = {p.name for p in (state / "models" / "staging").glob("*/*.chunk")}
            assert len(staged) >= 20  # what was verified is kept
            received = agent.chunks_received
            proxy.set_bandwidth(None)
            publisher.offer_devices(["porch"])  # offered again: it resumes from the staged chunks
            assert publisher.wait(["porch"], time.monotonic() + 60), publisher.rollout.devices["porch"]
            assert agent.chunks_received - received <= publisher.offer.chunks - len(staged) + 16
            assert [entry.version for entry in device.activator.activated] == [3]
        finally:
            if device is not None:
                device.close()


class _Marker:
    acknowledged = False


class _Link:
    """A transport the test drives: subscriptions, connects and the acknowledgement of what is published."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}
        self.listeners: list[Any] = []
        self.markers: list[_Marker] = []
        self.connected = True

    def subscribe(self, topic_filter: str, handler: Any, qos: int = 1) -> None:
        self.handlers[topic_filter] = handler

    def add_connect_listener(self, callback: Any) -> None:
        self.listeners.append(callback)
        callback()  # connected already, as MqttConnection does

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> _Marker:
        marker = _Marker()
        self.markers.append(marker)
        return marker

    def acknowledge(self) -> None:
        for marker in self.markers:
            marker.acknowledged = True

    def reconnect(self) -> None:
        for callback in self.listeners:
            callback()

    def offer(self, payload: bytes) -> None:
        self.handlers["edge/porch/model/offer"](Message("edge/porch/model/offer", payload, True))


def test_the_recheck_waits_for_the_broker_to_have_sent_the_retained_offers(
    assets: Assets, tmp_path: Path
) -> None:
    # A link that stalls right after the connect (no FIN: the connection still looks up) has not delivered
    # the retained offers yet: nothing may be judged withdrawn until the broker acknowledged what was sent
    # after the subscriptions, which it does after sending them.
    keys = make_keys(tmp_path / "keys")
    offer = make_offer(keys.sign(make_package(assets.model("digits_int8"), 2))).to_bytes()
    link = _Link()
    activator: Any = PackageActivator()
    agent = UpdateAgent(link, ModelStore(tmp_path / "state"), TrustStore.from_files([keys.pub]), activator,
                        "porch", approve=True, recheck_seconds=0.2).start()
    try:
        link.offer(offer)
        wait_for(lambda: agent.status.state == "held", timeout=5, what="held")
        link.acknowledge()
        time.sleep(0.8)
        assert agent.status.state == "held"  # re-delivered after the first connect: still offered
        link.reconnect()  # and the link stalls: the offer does not come, the marker is not acknowledged
        time.sleep(0.8)
        assert agent.status.state == "held"
        link.acknowledge()  # the broker got through: no offer came before it
        wait_for(lambda: agent.status.state == "idle", timeout=5, what="withdrawn")
        assert agent.status.reason == "offer withdrawn"
    finally:
        agent.close()


class _ShadowingActivator(PackageActivator):
    """Validates and activates like ``PackageActivator``; its shadow stage ends when the test says."""

    @property
    def can_shadow(self) -> bool:  # once a model serves to compare with (v1, activated first)
        return bool(self.activated)

    def __init__(self) -> None:
        super().__init__()
        self.on_done: Any = None

    def shadow(self, candidate: Any, policy: Any, on_done: Any, on_progress: Any, resume: Any = None) -> dict:
        self.on_done = on_done
        return {"samples": 0, "progress": 0.0, "state": "running"}

    def stop_shadow(self) -> None:
        pass


@pytest.mark.parametrize("offered_again", [True, False], ids=["still-offered", "withdrawn-meanwhile"])
def test_a_stage_that_passes_right_after_a_connect_waits_for_the_offers(
    assets: Assets, tmp_path: Path, offered_again: bool
) -> None:
    from edge.shadow import ShadowPolicy

    keys = make_keys(tmp_path / "keys")
    first, package = (keys.sign(make_package(assets.model("digits_int8"), v)) for v in (1, 2))
    offer = make_offer(package)
    link = _Link()
    activator: Any = _ShadowingActivator()
    agent = UpdateAgent(link, ModelStore(tmp_path / "state"), TrustStore.from_files([keys.pub]), activator,
                        "porch", shadow=ShadowPolicy(samples=10), recheck_seconds=0.3).start()
    chunk = link.handlers["edge/porch/model/chunk/#"]
    try:
        for each in (first, package):  # v1 serves (a stage needs a model to compare with), v2 is shadowed
            link.offer(make_offer(each).to_bytes())
            chunk(Message(chunk_topic("edge", "porch", make_offer(each).sha256, 0), each))
            time.sleep(0.3)
        wait_for(lambda: agent.status.state == "shadowing", timeout=10, what="shadow stage")
        assert [e.version for e in activator.activated] == [1]
        link.acknowledge()
        time.sleep(0.8)  # the first connect's offers are in
        link.reconnect()  # a reconnect (or a restart that resumed the stage near its end)...
        activator.on_done({"passed": True, "samples": 10, "agreement": 1.0})  # ...and it passes at once
        time.sleep(0.8)
        assert len(activator.activated) == 1 and agent.status.state == "shadowing"  # not before the offers
        if offered_again:
            link.offer(offer.to_bytes())
        link.acknowledge()
        if offered_again:
            wait_for(lambda: [e.version for e in activator.activated] == [1, 2], timeout=5, what="promoted")
        else:
            wait_for(lambda: agent.status.state == "idle", timeout=5, what="withdrawn")
            assert len(activator.activated) == 1 and agent.status.reason == "offer withdrawn"
    finally:
        agent.close()
