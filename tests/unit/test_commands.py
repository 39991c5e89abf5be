"""The scheduler command's pieces that need no server: the kept admin token."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from anypu.errors import AnypuError
from anypu.scheduler import admin_token


def test_the_admin_token_is_generated_once_and_kept_for_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    token, path = admin_token(state)
    assert path == state / "admin-token" and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert admin_token(state) == (token, path)  # a restart: the same token


def test_a_readable_token_file_is_narrowed_and_an_empty_one_named(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    path.write_text("kept-token\n")
    path.chmod(0o644)
    assert admin_token(tmp_path)[0] == "kept-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("")
    with pytest.raises(AnypuError, match="admin-token is empty: delete it"):
        admin_token(tmp_path)


def test_json_log_lines_carry_the_stimulus_id_apart() -> None:
    import json
    import logging

    from anypu._logging import JsonFormatter

    record = logging.LogRecord(
        "anypu.scheduler",
        logging.INFO,
        __file__,
        1,
        "job %s placed [%s]",
        ("j1", "submit-j1"),
        None,
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "job j1 placed" and line["stimulus_id"] == "submit-j1"
    assert (line["level"], line["logger"]) == ("info", "anypu.scheduler")
    assert line["time"].endswith("Z")


def test_token_list_shows_times_as_people_read_them() -> None:
    from anypu.scheduler._commands import _token_line

    item = {
        "id": "ab12",
        "created_at": 1000.0,
        "expires_at": 4600.0,
        "tiers": "edge",
        "state": "valid",
    }
    line = _token_line(item, now=1000.0 + 60)
    assert "expires_at=" in line and "(in 59m)" in line and "(1m ago)" in line
    assert "1000.0" not in line and "4600.0" not in line
