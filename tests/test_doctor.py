"""``kiosk doctor --broker [--room]`` against the sandbox for every dialect, and its failures."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.broker import write_sandbox_config
from tests.fixtures.sandbox import SandboxHandle

DIALECTS = ["lyzr", "oshara", "livekit", "self"]


def doctor(config: Path, key: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``kiosk doctor --broker`` in a subprocess (bounded by a timeout)."""
    env = {**os.environ, "DOCTOR_KEY": key}
    command = [sys.executable, "-m", "kiosk", "doctor", "--broker", "--config", str(config), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=90, check=False)


def key_for(sandbox: SandboxHandle, dialect: str) -> str:
    """The secret the dialect needs from the sandbox."""
    return sandbox.livekit_api_secret if dialect == "self" else sandbox.api_key


@pytest.mark.parametrize("dialect", DIALECTS)
def test_doctor_passes_for_every_dialect(sandbox: SandboxHandle, tmp_path: Path, dialect: str) -> None:
    """Every step prints ok with its time; the agent is seen in the room; nothing is left recorded."""
    key = key_for(sandbox, dialect)
    result = doctor(write_sandbox_config(sandbox, dialect, tmp_path), key, "--room")
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ["config", "api key", "broker start", "server url", "token", "clock", "room join", "broker end"]:
        assert re.search(rf"^\[ok\]\s+{step}\s.*\d+ ms$", result.stdout, re.MULTILINE), (step, result.stdout)
    assert "(agent)" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("doctor: all checks passed")
    assert key not in result.stdout + result.stderr and "eyJ" not in result.stdout + result.stderr
    assert list((tmp_path / "state" / "sessions").glob("*.json")) == []


def test_doctor_lyzr_session_is_ended_at_the_broker(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """The doctor's Lyzr session shows as ended by the broker call in the sandbox."""
    result = doctor(write_sandbox_config(sandbox, "lyzr", tmp_path), sandbox.api_key)
    assert result.returncode == 0, result.stdout + result.stderr
    room = re.search(r"broker start\s+room (\S+)", result.stdout)
    assert room is not None
    assert sandbox.session(room.group(1))["end_reason"] == "broker_end"


def test_doctor_names_an_unauthorized_key(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """A wrong key fails the broker start step with broker_unauthorized and a non-zero exit."""
    result = doctor(write_sandbox_config(sandbox, "lyzr", tmp_path), "sk_wrong_key_0123456789abc")
    assert result.returncode == 1
    assert re.search(r"^\[FAIL\]\s+broker start\s+broker_unauthorized: .*\d+ ms$", result.stdout, re.MULTILINE)
    assert "doctor: FAILED (broker_unauthorized)" in result.stdout
    assert "sk_wrong_key_0123456789abc" not in result.stdout + result.stderr


def test_doctor_names_an_unreachable_broker(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """A closed port fails with broker_unreachable."""
    result = doctor(write_sandbox_config(sandbox, "oshara", tmp_path, url="http://127.0.0.1:9"), sandbox.api_key)
    assert result.returncode == 1
    assert "doctor: FAILED (broker_unreachable)" in result.stdout


def test_doctor_names_a_missing_key(sandbox: SandboxHandle, tmp_path: Path) -> None:
    """An empty key source fails the api key step with secret_unreadable."""
    result = doctor(write_sandbox_config(sandbox, "lyzr", tmp_path), "")
    assert result.returncode == 1
    assert re.search(r"^\[FAIL\]\s+api key\s+secret_unreadable: .*DOCTOR_KEY", result.stdout, re.MULTILINE)


def test_doctor_config_error_exits_78(tmp_path: Path) -> None:
    """A broken config prints the message and exits 78."""
    path = tmp_path / "bad.toml"
    path.write_text(
        '[broker]\ndialect = "lyzr"\nurl = "http://broker.example.com"\nagent_id = "a"\napi_key_env = "K"\n'
    )
    result = doctor(path, "x")
    assert result.returncode == 78
    assert "broker.url" in result.stderr and "not encrypted" in result.stderr


def test_doctor_reads_the_credential_file_outside_systemd(tmp_path: Path) -> None:
    """Without $CREDENTIALS_DIRECTORY doctor reads the credential from the file LoadCredential= names (--json)."""
    config = tmp_path / "kiosk.toml"
    config.write_text(
        '[broker]\ndialect = "lyzr"\nurl = "http://127.0.0.1:9"\nagent_id = "a"\n'
        f'api_key_credential = "kiosk-test-no-such-credential"\n[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "doctor", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    step = next(line for line in lines if line.get("step") == "api key")
    assert step["result"] == "FAIL"
    assert "/etc/kiosk/kiosk-test-no-such-credential does not exist" in step["detail"]
    assert lines[-1] == {"result": "failed", "failure": "secret_unreadable"}


@pytest.mark.parametrize(("ttl_s", "says"), [(-2, "not valid even by the broker's own clock"), (5, "too short")])
def test_doctor_fails_a_token_expired_on_arrival_or_too_short_lived(
    sandbox: SandboxHandle, tmp_path: Path, ttl_s: float, says: str
) -> None:
    """A broker whose token expired 2 s before it arrived (or lives 5 s, under connect_timeout_s's 10 s): the clock
    step fails by the broker's own Date header, not "[ok] ... (in -2 s)", and the session is still ended."""
    from tests.fixtures.matrixbroker import Fault, serving

    with serving(sandbox.http_url) as broker:

        def expired(answer: dict[str, object]) -> dict[str, object]:
            token = sandbox.mint_token("kiosk-doc", str(answer["roomName"]), ttl_s=ttl_s)
            return {**answer, "userToken": token}

        broker.fault = Fault(forward=True, mutate=expired)
        result = doctor(write_sandbox_config(sandbox, "lyzr", tmp_path, url=broker.url), sandbox.api_key)
        assert result.returncode == 1, result.stdout + result.stderr
        assert re.search(r"^\[FAIL\]\s+clock\s+broker_malformed: .*" + says, result.stdout, re.MULTILINE), result.stdout
        assert "all checks passed" not in result.stdout
        assert broker.ends == broker.opened and len(broker.opened) == 1, result.stdout
    assert sandbox.session(broker.opened[0])["ended_at"] is not None
