"""``kiosk check-config`` as an installer runs it: a real subprocess, exit codes, masked secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk_test_6f1c0ffee2b9d4"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in {"KIOSK_CONFIG", "CREDENTIALS_DIRECTORY"}}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "kiosk", "check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        cwd=REPO,
        check=False,
    )


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "kiosk.toml"
    path.write_text(body)
    return path


def test_example_config_passes(tmp_path: Path) -> None:
    """The shipped example validates and exits 0 (its credential, as systemd would hand it over)."""
    (tmp_path / "broker-api-key").write_text(SECRET + "\n")
    result = _run("config/kiosk.toml", env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert 'dialect = "lyzr"' in result.stdout


def test_misspelt_key_exits_78_with_suggestion(tmp_path: Path) -> None:
    """A misspelt key under [session] exits 78 (EX_CONFIG) and suggests the right key."""
    path = _write(
        tmp_path, Path(REPO / "config/kiosk.toml").read_text().replace("silence_timeout_s", "silence_timeout")
    )
    result = _run("--config", str(path))
    assert result.returncode == 78
    assert str(path) in result.stderr
    assert "session.silence_timeout" in result.stderr
    assert "did you mean 'session.silence_timeout_s'?" in result.stderr


def test_secret_file_is_masked_and_loose_mode_warned(tmp_path: Path) -> None:
    """A readable secret file is shown as *** with its source; group/other access names the chmod to run."""
    key = tmp_path / "api_key"
    key.write_text(SECRET + "\n")
    key.chmod(0o644)
    body = f'[broker]\ndialect = "lyzr"\nurl = "https://b"\nagent_id = "a"\napi_key_file = "{key}"\n'
    result = _run(str(_write(tmp_path, body)))
    assert result.returncode == 0, result.stderr
    assert f"*** from file {key} (readable)" in result.stdout
    assert f"chmod 600 {key}" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_env_secret_never_printed(tmp_path: Path) -> None:
    """A key from the environment is reported as readable but never shown, also with --json."""
    body = '[broker]\ndialect = "oshara"\nurl = "https://o"\nagent_id = "a"\napi_key_env = "OSH_KEY"\n'
    path = _write(tmp_path, body)
    for extra in ([], ["--json"]):
        result = _run(str(path), *extra, env={"OSH_KEY": SECRET})
        assert result.returncode == 0, result.stderr
        assert "$OSH_KEY (readable)" in result.stdout
        assert SECRET not in result.stdout + result.stderr


def test_unreadable_secret_is_a_config_error(tmp_path: Path) -> None:
    """A secret file that does not exist exits 78 and says how to create it."""
    body = f'[broker]\ndialect = "lyzr"\nurl = "https://b"\nagent_id = "a"\napi_key_file = "{tmp_path}/missing"\n'
    result = _run(str(_write(tmp_path, body)))
    assert result.returncode == 78
    assert "does not exist" in result.stderr


def test_self_dialect_masks_livekit_key(tmp_path: Path) -> None:
    """The LiveKit API key name is masked too, and the secret comes from the credential directory."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "lk").write_text(SECRET)
    body = (
        '[broker]\ndialect = "self"\nlivekit_url = "wss://lk.example"\nlivekit_api_key = "APIabcdef"\n'
        'api_key_credential = "lk"\n'
    )
    result = _run(str(_write(tmp_path, body)), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert result.returncode == 0, result.stderr
    assert "APIabcdef" not in result.stdout
    assert f"*** from credential 'lk' at {creds}/lk (readable)" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_syntax_error_exits_78(tmp_path: Path) -> None:
    """A TOML syntax error exits 78 naming the line."""
    result = _run(str(_write(tmp_path, "[broker\n")))
    assert result.returncode == 78
    assert "line 1" in result.stderr


def test_secret_looking_overrides_are_masked(tmp_path: Path) -> None:
    """Override values under key-like names (x-api-key, authorization, password) are shown as ***."""
    body = (
        '[broker]\ndialect = "lyzr"\nurl = "https://b"\nagent_id = "a"\napi_key_env = "K"\n'
        '[broker.overrides]\nlanguage = "en"\n"x-api-key" = "sk_hidden_1"\nauthorization = "Bearer hidden_2"\n'
        '[broker.overrides.agentConfig]\npassword = "hidden_3"\n'
    )
    result = _run(str(_write(tmp_path, body)), env={"K": SECRET})
    assert result.returncode == 0, result.stderr
    assert 'language = "en"' in result.stdout
    for hidden in ("sk_hidden_1", "hidden_2", "hidden_3", SECRET):
        assert hidden not in result.stdout + result.stderr


BROKER = '[broker]\ndialect = "lyzr"\nurl = "https://b.example"\nagent_id = "a"\n'


def test_credential_outside_systemd_is_read_from_its_file(tmp_path: Path) -> None:
    """Without $CREDENTIALS_DIRECTORY the credential's own file is read: a missing one fails with file, key and line."""
    body = BROKER + 'api_key_credential = "kiosk-test-no-such-credential"\n'
    result = _run(str(_write(tmp_path, body)))
    assert result.returncode == 78
    assert "broker.api_key_credential (line 5)" in result.stderr
    assert "/etc/kiosk/kiosk-test-no-such-credential does not exist" in result.stderr


def test_empty_key_file_fails(tmp_path: Path) -> None:
    """An empty key file is an error, not a pass."""
    key = tmp_path / "key"
    key.write_text("\n")
    key.chmod(0o600)
    result = _run(str(_write(tmp_path, BROKER + f'api_key_file = "{key}"\n')))
    assert result.returncode == 78
    assert f"broker.api_key_file (line 5): secret file {key} is empty" in result.stderr


def test_pins_used_twice_are_named_with_lines(tmp_path: Path) -> None:
    """The button on an LED's pin, and two RGB colours on one pin: every clash named with its keys and lines."""
    body = (
        BROKER
        + 'api_key_env = "K"\n[trigger]\nbutton_pin = 18\n[leds]\nkind = "rgb"\n'
        + "[leds.rgb]\nred = 18\ngreen = 23\nblue = 23\n"
    )
    result = _run(str(_write(tmp_path, body)), env={"K": SECRET})
    assert result.returncode == 78
    assert "GPIO18 is used by trigger.button_pin (line 7) and leds.rgb.red (line 11)" in result.stderr
    assert "GPIO23 is used by leds.rgb.green (line 12) and leds.rgb.blue (line 13)" in result.stderr


def test_button_and_single_led_on_one_pin(tmp_path: Path) -> None:
    """A single LED on the button's pin is refused; an unused [leds.rgb] table is not counted."""
    body = BROKER + 'api_key_env = "K"\n[trigger]\nbutton_pin = 17\n[leds]\nkind = "single"\npin = 17\n'
    result = _run(str(_write(tmp_path, body)), env={"K": SECRET})
    assert result.returncode == 78 and "GPIO17 is used by trigger.button_pin" in result.stderr
    fine = body[: body.rindex("pin = 17")] + "pin = 18\n[leds.rgb]\nred = 17\ngreen = 22\nblue = 23\n"
    assert _run(str(_write(tmp_path, fine)), env={"K": SECRET}).returncode == 0


def test_broker_url_holding_the_endpoint_path_names_the_fix(tmp_path: Path) -> None:
    """A lyzr URL ending in /v1, or an oshara URL with the whole endpoint, fails naming the URL to use."""
    lyzr = BROKER.replace("https://b.example", "https://b.example/v1") + 'api_key_env = "K"\n'
    result = _run(str(_write(tmp_path, lyzr)), env={"K": SECRET})
    assert result.returncode == 78
    assert "broker.url (line 3)" in result.stderr and "/v1/v1/sessions/start" in result.stderr
    assert 'set broker.url = "https://b.example"' in result.stderr
    oshara = (
        '[broker]\ndialect = "oshara"\nurl = "https://api.oshara.ai/api/agents/agent-session/"\n'
        'agent_id = "a"\napi_key_env = "K"\n'
    )
    result = _run(str(_write(tmp_path, oshara)), env={"K": SECRET})
    assert result.returncode == 78 and 'set broker.url = "https://api.oshara.ai"' in result.stderr


def test_what_run_refuses_when_it_builds_the_broker(tmp_path: Path) -> None:
    """A plain-http broker off this machine is refused by check-config as by run, naming the key and its line."""
    body = BROKER.replace("https://b.example", "http://b.example") + 'api_key_env = "K"\n'
    result = _run(str(_write(tmp_path, body)), env={"K": SECRET})
    assert result.returncode == 78, result.stdout
    assert "broker.url (line 3)" in result.stderr and "http://b.example" in result.stderr
