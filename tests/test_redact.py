"""The one redaction, and API keys checked for what an HTTP header can carry, without ever showing them."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from kiosk.broker import make_broker
from kiosk.errors import SecretError
from kiosk.redact import is_sensitive_key, mask_userinfo, redact
from kiosk.secret import SecretSource
from tests.fixtures.broker import FakeBroker, make_config, reply

KEY = "sk_live_0123456789abcdefXYZ"


@pytest.mark.parametrize(
    "quoted",
    [KEY, repr(KEY), json.dumps(KEY), f"Illegal header value b'{KEY}\\n2nd'"],
)
def test_a_secret_is_masked_in_every_quoted_form(quoted: str) -> None:
    """Plain, repr, JSON, inside an error about a multi-line value."""
    assert "0123456789abcdef" not in redact(quoted, [KEY])


def test_a_percent_encoded_secret_is_masked() -> None:
    """A key with URL-special characters, as it appears in an encoded query string."""
    key = "k3y/with+special=chars0123456789"
    assert "0123456789" not in redact(f"GET /x?api_key_enc={urllib.parse.quote(key, safe='')}", [key])


def test_each_line_of_a_multi_line_secret_is_masked() -> None:
    """A key file with two lines: each line is masked wherever it shows up alone."""
    secret = "first-line-of-key-0123\nsecond-line-9876"
    text = redact("header 'first-line-of-key-0123' and 'second-line-9876'", [secret])
    assert "first-line" not in text and "second-line" not in text


def test_url_user_info_is_masked() -> None:
    """https://user:password@host is shown as https://***@host."""
    text = redact("cannot reach https://kiosk:hunter2secret@broker.example.com/v1 (refused)")
    assert "hunter2secret" not in text and "https://***@broker.example.com/v1" in text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Authorization: Bearer abcdef0123456789xyz", "Authorization: Bearer ***"),
        ("api_key=short", "api_key=***"),
        ("token: 0123", "token: ***"),
        ("Authorization: Bearer short", "Authorization: Bearer ***"),
        ("password hunter42", "password ***"),
        ("sent with token c2VjcmV0LXZhbHVlLTAx", "sent with token ***"),
        ("granted room r1, token expires 2026-12-04T06:31:25+00:00 (in 900 s)", None),
        ("the token is not valid yet", None),
        ("secret file /etc/kiosk/broker.key is readable", None),
    ],
)
def test_pairs_are_masked_and_plain_words_after_them_are_not(text: str, shown: str | None) -> None:
    """``key: value`` always; ``token value`` only when the value looks like a credential, not an English word."""
    assert redact(text) == (text if shown is None else shown)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (f"{KEY}\nsecond line\n", "holds 2 lines"),
        (f"\u201c{KEY}\u201d\n", "typographic quote at character 1"),
        (f"{KEY[:6]} {KEY[6:]}\n", "space at character 7"),
        (f"{KEY}\u00e9\n", "not printable ASCII"),
    ],
    ids=["two-lines", "curly-quotes", "space", "non-ascii"],
)
async def test_a_key_file_an_http_header_cannot_carry_is_refused_before_sending(
    tmp_path: Path, content: str, words: str
) -> None:
    """The start fails as a secret problem naming the file and what is wrong; nothing is sent, nothing leaks."""
    key_file = tmp_path / "broker-api-key"
    key_file.write_text(content)
    fake = FakeBroker([reply(200, {})])
    config = make_config("lyzr", tmp_path, api_key_env=None, api_key_file=key_file)
    broker = make_broker(config, client=fake.client(), secret=SecretSource(kind="file", name=str(key_file)))
    with pytest.raises(SecretError) as caught:
        await broker.start()
    message = str(caught.value)
    assert words in message and str(key_file) in message
    assert "0123456789" not in message and fake.requests == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@broker.example/v1", "https://***@broker.example/v1"),
        ("wss://token@lk.example", "wss://***@lk.example"),
        ("https://broker.example/v1/a@b", "https://broker.example/v1/a@b"),
        ("https://broker.example", "https://broker.example"),
    ],
)
def test_one_userinfo_mask_serves_urls_and_free_text(url: str, shown: str) -> None:
    """``mask_userinfo`` (used by ``check-config``) and ``redact`` (logs, errors) mask a URL's user info alike."""
    assert mask_userinfo(url) == shown
    assert redact(f"GET {url} failed") == f"GET {shown} failed"


@pytest.mark.parametrize("name", ["api_key", "x-api-key", "livekit_api_secret", "Password", "passwd", "cookie"])
def test_sensitive_key_names(name: str) -> None:
    """One rule names secret fields for check-config and for config error messages."""
    assert is_sensitive_key(name)


@pytest.mark.parametrize("name", ["url", "identity", "room_prefix", "timeout_s"])
def test_ordinary_key_names(name: str) -> None:
    """Keys that hold no secret are shown."""
    assert not is_sensitive_key(name)
