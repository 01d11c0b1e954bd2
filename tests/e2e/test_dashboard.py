"""The dashboard in a real headless browser (Debian's chromium through chromium-driver, driven by Selenium):
devices appear, a device killed with SIGKILL shows offline within 5 s without a reload, a rollout's progress
moves through its canary stage, a snapshot image loads. Each test saves a screenshot in its tmp_path."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from edge.activation import PipelineActivator
from edge.store import ModelStore
from tests.assets import Assets
from tests.broker import Broker
from tests.cloud_sync.helpers import Watcher, wait_for
from tests.cloud_sync.http_support import EDGE, ROOT, HttpProcess
from tests.cloud_sync.test_collector import envelope
from tests.cloud_sync.update_support import make_keys, start_device
from tests.edge.update_packages import make_package

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # make browser-deps installs them


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1500,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def text(driver: webdriver.Chrome, css: str) -> str | None:
    """The text of the first element matching ``css``, read in one step inside the page: the page redraws on
    every live update, so an element found first and read later may be gone."""
    result = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;", css)
    return None if result is None else str(result)


def state_of(driver: webdriver.Chrome, device: str) -> str | None:
    return text(driver, f'[data-state-of="{device}"]')


def edge_run(assets: Assets, mqtt: str, device: str, folder: Path, state: Path) -> subprocess.Popen[str]:
    folder.mkdir()
    return subprocess.Popen(
        [*EDGE, "run", str(assets.model("digits_int8")), "--watch", str(folder), "--mqtt", mqtt,
         "--device-id", device, "--state-dir", str(state), "--telemetry-interval", "0.5"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_devices_appear_and_a_killed_one_goes_offline_without_a_reload(
    assets: Assets, mosquitto: Broker, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    collect = HttpProcess("collect", mosquitto.url, tmp_path / "fleet.sqlite", token="tok",
                          log=tmp_path / "collect.log")
    devices = {name: edge_run(assets, mosquitto.url, name, tmp_path / f"{name}-in", tmp_path / name)
               for name in ("pi1", "pi2")}
    try:
        browser.get(f"{collect.url}/?token=tok")
        WebDriverWait(browser, 90).until(
            lambda d: state_of(d, "pi1") == "online" and state_of(d, "pi2") == "online")
        images = sorted(assets.digit_images.iterdir())[:6]
        for image in images:
            (tmp_path / "pi1-in" / image.name).write_bytes(image.read_bytes())

        WebDriverWait(browser, 60).until(
            lambda d: text(d, 'tr[data-device="pi1"] td.results') == str(len(images)))
        assert "digits" in (text(browser, 'tr[data-device="pi1"]') or "")  # its model, from its telemetry
        browser.execute_script("window.notReloaded = true;")
        devices["pi2"].send_signal(signal.SIGKILL)  # no goodbye: the broker sends its last will
        devices["pi2"].wait(10)
        killed = time.monotonic()
        WebDriverWait(browser, 5, poll_frequency=0.1).until(lambda d: state_of(d, "pi2") == "offline")
        shown_after = time.monotonic() - killed
        assert browser.execute_script("return window.notReloaded === true;")  # the same page, live
        assert state_of(browser, "pi1") == "online"
        browser.save_screenshot(str(tmp_path / "fleet.png"))

        browser.execute_script("location.hash = '#/device/pi1';")  # the device page: stored telemetry charts
        WebDriverWait(browser, 30).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, 'svg[data-series="fps"] polyline')
            and len(d.find_elements(By.CSS_SELECTOR, "#results tbody tr")) == len(images))
        browser.save_screenshot(str(tmp_path / "device.png"))
        print(f"offline shown {shown_after:.2f} s after the kill")
    finally:
        for proc in devices.values():
            stop(proc)
        collect.stop()


def test_a_rollouts_progress_moves_through_its_canary(
    assets: Assets, mosquitto: Broker, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    keys = make_keys(tmp_path / "keys")
    names = ["cam1", "cam2", "cam3"]
    fleet = [start_device(mosquitto.url, tmp_path / name, name, [keys.pub],
                          activator=PipelineActivator(None, ModelStore(tmp_path / name))) for name in names]
    collect = HttpProcess("collect", mosquitto.url, tmp_path / "fleet.sqlite", log=tmp_path / "collect.log")
    package = tmp_path / "digits-v2.edgepkg"
    package.write_bytes(make_package(assets.model("digits_int8"), 2))
    push = None
    try:
        browser.get(f"{collect.url}/#/rollout")
        WebDriverWait(browser, 30).until(lambda d: "no rollout" in (text(d, "#main") or ""))
        push = subprocess.Popen(
            [*EDGE, "push-model", str(package), "--key", str(keys.key), "--mqtt", mosquitto.url,
             "--device", *names, "--canary", "1", "--chunk-size", "2", "--rate", "12", "--wait", "120"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        seen: list[dict[str, Any]] = []
        read = """return Array.from(document.querySelectorAll('section.rollout')).map(s => ({
            stage: s.querySelector('.stage').textContent,
            rows: Array.from(s.querySelectorAll('tbody tr')).map(r => ({device: r.dataset.device,
              state: r.children[2].textContent, pct: parseInt(r.querySelector('.pct').textContent)}))}));"""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            sections = browser.execute_script(read)
            if sections:
                seen.append(sections[0])
                if not (tmp_path / "rollout-canary.png").exists() and sections[0]["stage"] == "canary":
                    browser.save_screenshot(str(tmp_path / "rollout-canary.png"))
                rows = sections[0]["rows"]
                if len(rows) == 3 and all(row["state"] == "active" for row in rows):
                    break
            time.sleep(0.2)
        browser.save_screenshot(str(tmp_path / "rollout.png"))
        assert push.wait(120) == 0, push.stdout.read() if push.stdout else ""
        assert seen and all(row["state"] == "active" for row in seen[-1]["rows"]), seen[-1:]
        # the canary went first: a stage where the others waited while one device downloaded
        canary = [s for s in seen if s["stage"] == "canary"]
        assert any(r["state"] == "waiting" for s in canary for r in s["rows"]), seen
        progress = {row["pct"] for s in seen for row in s["rows"] if row["state"] == "downloading"}
        assert any(0 < pct < 100 for pct in progress), progress  # it moved through the middle, live
        assert len(progress) >= 2, progress
        browser.get(f"{collect.url}/#/device/cam2")  # the model history on the device page
        WebDriverWait(browser, 30).until(lambda d: "digits v2" in (text(d, "#models") or ""))
        history = text(browser, "#models") or ""
        assert "active" in history and "downloading" in history, history
    finally:
        if push is not None and push.poll() is None:
            push.kill()
            push.wait()
        collect.stop()
        for device in fleet:
            device.close()


def test_a_snapshot_image_loads_on_the_device_page(
    mosquitto: Broker, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    """A device's event and its retained snapshot (as a device publishes them) on the device page."""
    from PIL import Image
    from skimage import data

    collect = HttpProcess("collect", mosquitto.url, tmp_path / "fleet.sqlite", log=tmp_path / "collect.log")
    cam = Watcher(mosquitto.url, client_id="cam5")
    try:
        jpeg = io.BytesIO()
        Image.fromarray(data.chelsea()).save(jpeg, "JPEG")  # scikit-image's cat photo: 451 x 300
        cam.conn.publish("edge/cam5/status", b'{"state": "online"}', retain=True).wait(5)
        cam.conn.publish("edge/cam5/results", json.dumps(envelope("result", 1, "cam5")).encode()).wait(5)
        event = envelope("event", 2, "cam5", label="cat")
        cam.conn.publish("edge/cam5/events", json.dumps(event).encode()).wait(5)
        cam.conn.publish("edge/cam5/front/cat/snapshot", jpeg.getvalue(), retain=True).wait(5)
        reply = {"ok": True, "request_id": "r42", "seq": 2, "ts": time.time()}
        cam.conn.publish("edge/cam5/cmd/ping/reply", json.dumps(reply).encode()).wait(5)
        def stored() -> Any:
            try:
                return collect.get("/api/devices/cam5")["snapshots"]
            except urllib.error.HTTPError as exc:  # 404 until the collector has heard of the device
                if exc.code != 404:
                    raise
                return None

        wait_for(stored, what="the snapshot stored")
        browser.get(f"{collect.url}/#/device/cam5")
        loaded = """const img = document.querySelector('img.snapshot');
                    return img && img.complete ? [img.naturalWidth, img.naturalHeight] : null;"""
        size = WebDriverWait(browser, 30).until(lambda d: d.execute_script(loaded))
        assert size == [451, 300]
        events = text(browser, "#events") or ""
        assert "cat" in events and "drive" in events and "new" in events
        WebDriverWait(browser, 10).until(lambda d: "r42" in (text(d, "#replies") or ""))
        assert "ping" in (text(browser, "#replies") or "")  # the last command replies
        browser.save_screenshot(str(tmp_path / "snapshot.png"))
    finally:
        cam.close()
        collect.stop()


def test_a_real_devices_events_and_snapshot_on_the_device_page(
    assets: Assets, mosquitto: Broker, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    """``edge run --events`` (the SSD test model on a square crossing a zone): its events are stored in the
    results' sequence without a gap, and its retained snapshot loads on the device page."""
    import sqlite3
    from contextlib import closing

    from tests.e2e.test_tracking_cli import moving_square

    db = tmp_path / "fleet.sqlite"
    collect = HttpProcess("collect", mosquitto.url, db, log=tmp_path / "collect.log")
    try:
        clip = moving_square(tmp_path / "square.mp4")
        done = subprocess.run(
            [*EDGE, "run", str(assets.model("ssd")), str(clip), "--std", "255", "--resize", "letterbox",
             "--source-name", "yard", "--events", "--min-frames", "2", "--zone", "right=0.5,0,1,0,1,1,0.5,1",
             "--mqtt", mosquitto.url, "--device-id", "cam1", "--state-dir", str(tmp_path / "state"),
             "--telemetry-interval", "0", "--profile", "none"],
            cwd=ROOT, capture_output=True, text=True, timeout=180,
        )
        assert done.returncode == 0, done.stderr

        def stored() -> list[tuple[int, str]]:
            with closing(sqlite3.connect(db)) as conn:
                return conn.execute("SELECT seq, kind FROM results ORDER BY seq").fetchall()

        rows = wait_for(lambda: (lambda r: r if len(r) == 19 else None)(stored()), what="19 rows stored")
        assert [seq for seq, _ in rows] == list(range(1, 20))  # one sequence, no gap
        assert sum(kind == "event" for _, kind in rows) == 3
        browser.get(f"{collect.url}/#/device/cam1")
        loaded = """const img = document.querySelector('img.snapshot');
                    return img && img.complete ? [img.naturalWidth, img.naturalHeight] : null;"""
        assert WebDriverWait(browser, 30).until(lambda d: d.execute_script(loaded)) == [128, 128]
        WebDriverWait(browser, 10).until(lambda d: "end" in (text(d, "#events") or ""))
        events = text(browser, "#events") or ""
        assert "new" in events and "update" in events and "yard" in events and "right" in events
        counts = "stored 16 results, 3 events, lost 0"  # the device page's own count, exact
        WebDriverWait(browser, 10).until(lambda d: counts in (text(d, "#main") or ""))
        browser.save_screenshot(str(tmp_path / "device-events.png"))
    finally:
        collect.stop()
