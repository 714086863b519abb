"""Config models and loading: defaults, per-dialect requirements, messages that name file, key and fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from kiosk.config import KioskConfig
from kiosk.configfile import DEFAULT_PATH, load_config, parse_config, resolve_path
from kiosk.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "kiosk.toml"
LYZR = '[broker]\ndialect = "lyzr"\nurl = "https://b.example"\nagent_id = "a1"\napi_key_env = "K"\n'


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="kiosk.toml")
    return str(info.value)


def test_example_config_is_valid() -> None:
    """The shipped config/kiosk.toml validates as it is."""
    config = load_config(EXAMPLE)
    assert config.broker.dialect == "lyzr"
    assert config.control.socket == Path("/run/kiosk/control.sock")


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        sub = next((a for a in nested if issubclass(a, BaseModel)), None)
        if sub is not None:
            keys |= _keys(sub, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_example_config_mentions_every_key() -> None:
    """Every setting the models know appears in config/kiosk.toml, set or commented out."""
    text = EXAMPLE.read_text()
    table = ""
    seen: set[str] = set()
    for line in text.splitlines():
        header = re.match(r"^#?\[([\w.]+)\]", line)
        if header:
            table = header.group(1)
            seen.add(table)
            continue
        key = re.match(r"^#?(\w+) = ", line)
        if key:
            seen.add(f"{table}.{key.group(1)}")
    missing = _keys(KioskConfig) - seen
    assert not missing, f"keys missing from config/kiosk.toml: {sorted(missing)}"


def test_minimal_config_fills_defaults() -> None:
    """Only [broker] is required; every other section has working defaults."""
    config = parse_config(LYZR)
    assert config.session.silence_timeout_s == 20.0
    assert config.device.identity.startswith("kiosk-")
    assert config.leds.kind == "none"


def test_misspelt_session_key_suggests_the_right_one() -> None:
    """An unknown key names file, dotted key, line and the closest known key."""
    message = _error(LYZR + "[session]\nsilence_timout_s = 5\n")
    assert "kiosk.toml" in message
    assert "session.silence_timout_s (line 7): unknown key; did you mean 'session.silence_timeout_s'?" in message


def test_unknown_section_suggests_the_right_one() -> None:
    """A misspelt table name is suggested too."""
    assert "did you mean 'session'?" in _error(LYZR + "[sesion]\n")


def test_toml_syntax_error_names_the_line() -> None:
    """A TOML syntax error says which line and column."""
    message = _error("[broker]\ndialect = lyzr\n")
    assert "TOML syntax error: line 2" in message


def test_missing_broker_section() -> None:
    """Without [broker] the message says to add it."""
    assert "missing section [broker]" in _error("[session]\nsilence_timeout_s = 5\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[broker]\ndialect = "lyzr"\napi_key_env = "K"\n', "needs broker.url"),
        ('[broker]\ndialect = "oshara"\nurl = "https://o"\napi_key_env = "K"\n', "needs broker.agent_id"),
        ('[broker]\ndialect = "lyzr"\nurl = "https://o"\nagent_id = "a"\n', "needs an API key"),
        ('[broker]\ndialect = "self"\napi_key_env = "K"\n', "needs broker.livekit_url"),
        ('[broker]\ndialect = "livekit"\nurl = "ftp://x"\n', "must start with https://"),
        (LYZR + 'api_key_file = "/k"\n', "set exactly one of"),
        ('[broker]\ndialect = "lyz"\n', "Input should be 'lyzr', 'oshara', 'livekit' or 'self'"),
        (LYZR + '[leds]\nkind = "rgb"\n', "needs [leds.rgb]"),
        (LYZR + '[leds]\nkind = "single"\npin = 40\n', "leds.pin (line 8): Input should be less than or equal to 27"),
        (LYZR + "[session]\nsilence_timeout_s = 900\n", "silence_timeout_s must be shorter than max_duration_s"),
        (LYZR + '[control]\nsocket_mode = "rw"\n', "octal mode"),
    ],
)
def test_errors_say_what_is_expected(text: str, expected: str) -> None:
    """Each invalid setting gets a message that says what is expected."""
    assert expected in _error(text)


def test_secret_values_are_never_echoed() -> None:
    """A key written inline by mistake is refused without repeating its value."""
    message = _error(LYZR + 'api_key = "sk_live_supersecret"\n')
    assert "unknown key" in message
    assert "supersecret" not in message


def test_resolve_path_order(tmp_path: Path) -> None:
    """--config wins over $KIOSK_CONFIG, which wins over /etc/kiosk/kiosk.toml."""
    assert resolve_path("a.toml", {"KIOSK_CONFIG": "b.toml"}) == Path("a.toml")
    assert resolve_path(None, {"KIOSK_CONFIG": "b.toml"}) == Path("b.toml")
    assert resolve_path(None, {}) == DEFAULT_PATH


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    """A missing file names the path and the ways to point at another one."""
    with pytest.raises(ConfigError, match=r"no such file.*--config"):
        load_config(tmp_path / "nope.toml")


def test_config_is_frozen() -> None:
    """Sections cannot be changed after loading."""
    config = parse_config(LYZR)
    with pytest.raises(ValueError, match="frozen"):
        config.session.silence_timeout_s = 1  # type: ignore[misc]
