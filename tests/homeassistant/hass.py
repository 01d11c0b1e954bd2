"""A real Home Assistant process (``Hass``): a free loopback port, its own config folder, set up without the
UI (onboarding API -> owner -> token -> MQTT config flow), REST and websocket helpers to read its states,
entity and device registries and to call its services; ``StateLog`` records every state change."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import websocket

from tests.broker import Broker, free_port

CLIENT_ID = "http://127.0.0.1/"  # the OAuth client id onboarding hands its code to
BOOT_TIMEOUT_S = 180.0
WAIT_S = 30.0

CONFIG_YAML = """\
homeassistant:
  name: edge-test
  unit_system: metric
  time_zone: UTC
  latitude: 0
  longitude: 0
  elevation: 0
  currency: EUR
  country: DE
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
onboarding:
config:
websocket_api:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
"""


def wait_until(condition: Callable[[], Any], timeout: float = WAIT_S, what: str = "condition") -> Any:
    """``condition()``'s first truthy value; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.1)


class Hass:
    """One Home Assistant process: start/stop/restart on the same port and config folder, REST and
    websocket helpers with the token made at onboarding."""

    def __init__(self, python: str, config_dir: Path) -> None:
        self.python = python
        self.config_dir = config_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.version = ""
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "configuration.yaml").write_text(CONFIG_YAML.format(port=self.port))
        self.log_path = config_dir / "hass.out"

    # ------------------------------------------------------------------ process

    def start(self) -> Hass:
        """Start and return once the HTTP API answers (and, when onboarded, the token works)."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [self.python, "-m", "homeassistant", "--config", str(self.config_dir), "--skip-pip",
             "--log-no-color"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.config_dir,
        )
        log.close()
        wait_until(self._answers, BOOT_TIMEOUT_S, f"Home Assistant on {self.url} (log: {self.log_path})")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"Home Assistant exited ({self.process.returncode}):\n{self.log_tail()}")
        try:
            if not self.token:
                return requests.get(f"{self.url}/api/onboarding", timeout=2).status_code == 200
            reply = requests.get(f"{self.url}/api/config", headers=self.headers, timeout=2)
        except requests.RequestException:
            return False
        if reply.status_code != 200:
            return False
        return reply.json().get("state") == "RUNNING"

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it (Home Assistant saves its registries)."""
        proc, self.process = self.process, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def restart(self) -> Hass:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def release(self) -> tuple[int, int]:
        """(year, month) of the running release, e.g. (2024, 3)."""
        year, month = self.version.split(".")[:2]
        return int(year), int(month)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # ------------------------------------------------------------------ set-up without the UI

    def onboard(self) -> None:
        """Create the owner through the onboarding API and trade its auth code for an access token."""
        created = requests.post(f"{self.url}/api/onboarding/users", timeout=30, json={
            "client_id": CLIENT_ID, "name": "Test", "username": "test", "password": "test-password-1",
            "language": "en"})
        created.raise_for_status()
        token = requests.post(f"{self.url}/auth/token", timeout=30, data={
            "grant_type": "authorization_code", "code": created.json()["auth_code"], "client_id": CLIENT_ID})
        token.raise_for_status()
        self.token = token.json()["access_token"]
        # a long-lived token survives restarts without a refresh (the short one lasts 30 minutes)
        self.token = self.ws("auth/long_lived_access_token", client_name="edge-tests", lifespan=1)
        # (the other steps are left out: they would add weather, radio and text-to-speech integrations)
        requests.post(f"{self.url}/api/onboarding/analytics", headers=self.headers, json={}, timeout=30)
        wait_until(self._answers, BOOT_TIMEOUT_S, "Home Assistant running")
        self.version = self.api("GET", "/api/config")["version"]

    def add_mqtt(self, broker: Broker) -> dict[str, Any]:
        """The MQTT integration through its config flow (what the UI's "Add integration" does)."""
        flow = self.api("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        while flow["type"] == "menu":  # newer releases may ask how to set it up first
            flow = self.api("POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
                            {"next_step_id": "broker" if "broker" in flow["menu_options"] else
                             flow["menu_options"][0]})
        assert flow["type"] == "form", flow
        done = self.api("POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
                        {"broker": broker.host, "port": broker.port})
        assert done["type"] == "create_entry", done
        wait_until(lambda: any(e["domain"] == "mqtt" and e["state"] == "loaded"
                               for e in self.api("GET", "/api/config/config_entries/entry")),
                   what="MQTT integration loaded")
        return done

    # ------------------------------------------------------------------ API

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def api(self, method: str, path: str, body: Any = None) -> Any:
        reply = requests.request(method, f"{self.url}{path}", headers=self.headers, json=body, timeout=30)
        if reply.status_code >= 400:
            raise AssertionError(f"{method} {path} -> {reply.status_code}: {reply.text[:500]}")
        return reply.json() if reply.content else None

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", headers=self.headers, timeout=30)

    def ws(self, kind: str, **fields: Any) -> Any:
        """One websocket command's result (a fresh, authenticated connection per command)."""
        conn = websocket.create_connection(f"ws://127.0.0.1:{self.port}/api/websocket", timeout=30)
        try:
            assert json.loads(conn.recv())["type"] == "auth_required"
            conn.send(json.dumps({"type": "auth", "access_token": self.token}))
            assert json.loads(conn.recv())["type"] == "auth_ok"
            conn.send(json.dumps({"id": 1, "type": kind, **fields}))
            while True:
                answer = json.loads(conn.recv())
                if answer.get("id") == 1 and answer.get("type") == "result":
                    break
        finally:
            conn.close()
        if not answer["success"]:
            raise AssertionError(f"websocket {kind}: {answer.get('error')}")
        return answer["result"]

    def state(self, entity_id: str) -> dict[str, Any] | None:
        reply = self.get(f"/api/states/{entity_id}")
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        return reply.json()

    def wait_state(
        self, entity_id: str, condition: Callable[[dict[str, Any]], Any] = lambda s: True,
        timeout: float = WAIT_S,
    ) -> dict[str, Any]:
        """The entity's state once ``condition(state)`` holds."""
        last: list[Any] = [None]

        def check() -> dict[str, Any] | None:
            last[0] = self.state(entity_id)
            return last[0] if last[0] is not None and condition(last[0]) else None

        try:
            return wait_until(check, timeout, f"state of {entity_id}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {last[0]}") from None

    def entities(self, platform: str = "mqtt") -> dict[str, dict[str, Any]]:
        """entity id -> entity registry entry, for ``platform``'s entities."""
        entries = self.ws("config/entity_registry/list")
        return {e["entity_id"]: e for e in entries if e["platform"] == platform}

    def devices(self) -> dict[str, dict[str, Any]]:
        return {d["id"]: d for d in self.ws("config/device_registry/list")}

    def render(self, template: str, **variables: Any) -> str:
        """``template`` rendered by Home Assistant's own template engine (its sandbox and filters)."""
        reply = requests.post(f"{self.url}/api/template", headers=self.headers,
                              json={"template": template, "variables": variables}, timeout=30)
        reply.raise_for_status()
        return reply.text

    def call(self, domain: str, service: str, **data: Any) -> Any:
        return self.api("POST", f"/api/services/{domain}/{service}", data)


class StateLog:
    """Every ``state_changed`` event Home Assistant fires while it runs (a websocket subscription on a
    thread): what a sensor showed in between two polls, e.g. never ``None`` after a failed input."""

    def __init__(self, ha: Hass) -> None:
        self.changes: list[tuple[str, str]] = []  # (entity id, new state)
        self.states: list[dict[str, Any]] = []  # every new state in full (attributes too)
        self._conn = websocket.create_connection(f"ws://127.0.0.1:{ha.port}/api/websocket", timeout=30)
        assert json.loads(self._conn.recv())["type"] == "auth_required"
        self._conn.send(json.dumps({"type": "auth", "access_token": ha.token}))
        assert json.loads(self._conn.recv())["type"] == "auth_ok"
        self._conn.send(json.dumps({"id": 1, "type": "subscribe_events", "event_type": "state_changed"}))
        answer = json.loads(self._conn.recv())
        assert answer["success"], answer
        self._conn.settimeout(None)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                message = json.loads(self._conn.recv())
                data = message.get("event", {}).get("data", {})
                if data.get("new_state") is not None:
                    self.states.append(data["new_state"])
                    self.changes.append((data["entity_id"], data["new_state"]["state"]))

    def of(self, entity_id: str) -> list[str]:
        return [state for entity, state in list(self.changes) if entity == entity_id]

    def full(self, entity_id: str) -> list[dict[str, Any]]:
        """Every new state of ``entity_id`` with its attributes, in order."""
        return [state for state in list(self.states) if state["entity_id"] == entity_id]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
