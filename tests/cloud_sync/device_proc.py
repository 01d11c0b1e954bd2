"""A device process for kill -9 tests: ``python -m tests.cloud_sync.device_proc URL STATE_DIR COUNT``.

Emits COUNT fake results through a real ``DeviceSync`` (broker up or not), prints ``emitted``, then
serves until killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from cloud_sync.connection import parse_broker_url
from cloud_sync.device import DeviceOptions, DeviceSync
from tests.cloud_sync.fakes import FakePipeline, record


def main(url: str, state_dir: str, count: int) -> None:
    options = DeviceOptions(
        broker=parse_broker_url(url), device_id="dev1", state_dir=Path(state_dir),
        telemetry_interval_s=0.5, reconnect_max=1,
    )
    sync = DeviceSync(options, FakePipeline()).start()
    for i in range(count):
        sync.sinks[0].emit(record(f"frame{i}.jpg"))
    print("emitted", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
