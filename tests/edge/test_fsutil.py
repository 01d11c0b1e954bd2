"""Where state lives by default, and writes that leave either the old file or the new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.fsutil import atomic_write_bytes, atomic_writer, default_state_dir


def test_default_state_dir_prefers_edge_state_dir_then_xdg_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_STATE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "explicit"
    monkeypatch.delenv("EDGE_STATE_DIR")
    assert default_state_dir() == tmp_path / "xdg" / "edge"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "edge"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "active.json"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("power cut")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["active.json"]
    atomic_write_bytes(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new" and (target.stat().st_mode & 0o777) == 0o600
