"""``edge outbox`` and ``edge collect`` as commands: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cloud_sync.outbox import Outbox, read_stats
from edge.cli import main
from tests.broker import Broker, free_port
from tests.cloud_sync.fakes import FakePublisher, record
from tests.cloud_sync.helpers import Watcher, device

ROOT = Path(__file__).resolve().parents[2]


def pending_outbox(state: Path, n: int) -> None:
    """An outbox with ``n`` results published but never acknowledged (as after a crash)."""
    outbox = Outbox(state).start(FakePublisher())
    for _ in range(n):
        seq = outbox.reserve_seq()
        outbox.add("edge/dev1/results", json.dumps(record("x") | {"seq": seq}).encode(), seq=seq)
    outbox.close()


def test_outbox_shows_pending_and_flush_delivers(
    mosquitto: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    pending_outbox(state, 7)
    assert main(["outbox", "--state-dir", str(state), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pending"] == 7 and doc["oldest_age_s"] >= 0 and doc["last_seq"] == 7
    assert main(["outbox", "--state-dir", str(state)]) == 0
    human = capsys.readouterr().out
    assert "pending:       7" in human and "oldest" in human

    watch = Watcher(mosquitto.url, "edge/dev1/results")
    assert main(["outbox", "--state-dir", str(state), "--flush", "--mqtt", mosquitto.url, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pending"] == 0 and doc["delivered"] == 7
    assert [json.loads(watch.next("results").payload)["seq"] for _ in range(7)] == list(range(1, 8))
    watch.close()


def test_outbox_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    pending_outbox(state, 1)
    port = free_port()
    assert main(["outbox", "--state-dir", str(state), "--flush", "--mqtt", f"mqtt://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge outbox: error: broker mqtt://127.0.0.1:") and "not reachable" in err
    assert len(err.splitlines()) == 1
    assert read_stats(state).pending == 1  # nothing lost by the failed flush
    assert main(["outbox", "--state-dir", str(state), "--flush"]) == 2
    assert "--flush needs a broker" in capsys.readouterr().err
    assert main(["outbox", "--state-dir", str(state), "--flush", "--mqtt", f"mqtt://127.0.0.1:{port}",
                 "--timeout", "-5"]) == 2
    assert "--timeout must be more than 0 seconds, got -5" in capsys.readouterr().err
    assert main(["fleet", "status", "--mqtt", f"mqtt://127.0.0.1:{port}", "--timeout", "0"]) == 2
    assert "--timeout must be more than 0 seconds, got 0" in capsys.readouterr().err
    assert main(["outbox", "--state-dir", str(tmp_path / "none")]) == 2
    assert "no outbox at" in capsys.readouterr().err


def test_collect_prints_results_and_reports(mosquitto: Broker, tmp_path: Path) -> None:
    db = tmp_path / "fleet.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "collect", "--mqtt", mosquitto.url, "--db", str(db), "--print"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None and "listening on" in proc.stderr.readline()
        sync = device(mosquitto.url, tmp_path / "state", telemetry_interval_s=0)
        for i in range(10):
            sync.sinks[0].emit(record(i))
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(10)]
        assert [line["seq"] for line in lines] == list(range(1, 11))
        sync.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    report = json.loads(err[err.index("{"):])
    assert report["stored"] == 10 and report["invalid"] == 0
    (stream,) = report["devices"]["dev1"].values()
    assert stream["stored"] == 10 and stream["missing"] == [] and stream["last_seq"] == 10

    done = subprocess.run([sys.executable, "-m", "edge", "collect", "--db", str(db), "--report"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert json.loads(done.stdout)["devices"]["dev1"]


def test_collect_refused_credentials_is_one_line(
    mosquitto_factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # type: ignore[no-untyped-def]
) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "cloud", "right"], check=True)
    broker = mosquitto_factory(anonymous=False, global_extra=[f"password_file {passwd}"])
    url = f"mqtt://cloud:wrong@127.0.0.1:{broker.port}"
    assert main(["collect", "--mqtt", url, "--db", str(tmp_path / "c.sqlite"), "--duration", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge collect: error: broker mqtt://cloud@127.0.0.1") and "refused" in err
    assert "wrong" not in err  # the password is never printed
    assert main(["collect", "--mqtt", "ftp://x", "--db", str(tmp_path / "bad-url.sqlite")]) == 2
    assert "broker URL 'ftp://x' is not valid" in capsys.readouterr().err
    assert not (tmp_path / "bad-url.sqlite").exists()  # a bad URL leaves no empty database behind
    assert main(["collect", "--mqtt", url, "--db", str(tmp_path / "bad-share.sqlite"), "--share", "a/b"]) == 2
    assert "share group 'a/b' cannot be used in an MQTT topic" in capsys.readouterr().err
    assert not (tmp_path / "bad-share.sqlite").exists()


def test_run_refused_credentials_fail_at_start(mosquitto_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from cloud_sync.errors import BrokerError

    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "dev1", "right"], check=True)
    broker = mosquitto_factory(anonymous=False, global_extra=[f"password_file {passwd}"])
    with pytest.raises(BrokerError, match="refused"):
        device(f"mqtt://dev1:wrong@127.0.0.1:{broker.port}", tmp_path / "state")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--device", "a/b"], "--device 'a/b' cannot be used in an MQTT topic"),
        (["--device", "kitchen cam"], "--device 'kitchen cam' cannot be used"),  # as edge run's --device-id
        (["--group", "x+y"], "--group 'x+y' cannot be used in an MQTT topic"),
        (["--device", "d", "--chunk-size", "0"], "--chunk-size must be 1 to 1024 KiB, got 0"),
        (["--device", "d", "--chunk-size", "4096"], "--chunk-size must be 1 to 1024 KiB, got 4096"),
        (["--device", "d", "--rate", "-1"], "--rate must be 0 (no limit) or more KiB/s, got -1"),
    ],
)
def test_push_model_bad_options_fail_before_the_broker(
    assets, tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str  # type: ignore[no-untyped-def]
) -> None:
    from edge.signing import generate_keys

    key, _ = generate_keys(tmp_path / "keys")
    unreachable = f"mqtt://127.0.0.1:{free_port()}"  # reaching it would be a different error
    argv = ["push-model", str(assets.digits_package), "--key", str(key), "--mqtt", unreachable, *options]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing offered
    (line,) = err.strip().splitlines()
    assert line.startswith("edge push-model: error: ") and message in line


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--trust", "missing.pub"], "public key file not found"),
        (["--trust", "signing.pub", "--group", "a/b"], "--group 'a/b' cannot be used in an MQTT topic"),
        (["--trust", "signing.pub", "--health-seconds", "0"], "--health-seconds more than 0"),
    ],
)
def test_run_bad_update_options_fail_before_connecting(
    assets, mosquitto: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
    options: list[str], message: str,
) -> None:
    from edge.signing import generate_keys

    generate_keys(tmp_path)
    state = tmp_path / "state"
    options = [str(tmp_path / o) if o.endswith(".pub") else o for o in options]
    argv = ["run", str(assets.model("digits_int8")), str(assets.digit_images), "--mqtt", mosquitto.url,
            "--device-id", "early", "--state-dir", str(state), *options]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edge run: error: ") and message in err and len(err.splitlines()) == 1
    assert not (state / "outbox.sqlite").exists()  # no outbox, no connection: nothing was started
    retained = Watcher(mosquitto.url, "edge/early/status")  # a device that connected leaves a status
    with pytest.raises(queue.Empty):
        retained.next("status", timeout=0.5)
    retained.close()


def test_two_collectors_sharing_one_db_and_group_stay_connected_and_split_the_load(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """Same host, same --db, same --share: each gets its own client id, so neither kicks the other off."""
    db = tmp_path / "fleet.sqlite"
    command = [sys.executable, "-m", "edge", "collect", "--mqtt", mosquitto.url, "--db", str(db),
               "--share", "fleet", "--print", "--no-repair"]
    procs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    lines: queue.Queue[tuple[int, int]] = queue.Queue()

    def read(index: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((index, json.loads(line)["seq"]))

    try:
        for proc in procs:
            assert proc.stderr is not None and "listening on" in proc.stderr.readline()
        readers = [threading.Thread(target=read, args=(i, p), daemon=True) for i, p in enumerate(procs)]
        for reader in readers:
            reader.start()
        sync = device(mosquitto.url, tmp_path / "state", telemetry_interval_s=0)
        for i in range(100):
            sync.sinks[0].emit(record(i))
        got = [lines.get(timeout=30) for _ in range(100)]
        sync.close()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.communicate(timeout=30)
    assert sorted(seq for _, seq in got) == list(range(1, 101))  # each result printed once
    assert {index for index, _ in got} == {0, 1}  # by both of them
    log = mosquitto.log()
    assert "already connected" not in log, log  # no session takeover between the two
