"""Reading ``kiosk.toml``: where it is, parsing it, and error messages an installer can act on.

Every problem names the file, the dotted key (with its line when it can be found), what is wrong and what is
expected. Unknown keys get a "did you mean" suggestion. Values of keys that look secret are never echoed.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from kiosk.config import KioskConfig
from kiosk.errors import ConfigError
from kiosk.redact import is_sensitive_key

DEFAULT_PATH = Path("/etc/kiosk/kiosk.toml")
EX_CONFIG = 78


def resolve_path(cli_path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Path:
    """Pick the config file: ``--config``, else ``$KIOSK_CONFIG``, else ``/etc/kiosk/kiosk.toml``."""
    env = os.environ if environ is None else environ
    if cli_path:
        return Path(cli_path)
    if env.get("KIOSK_CONFIG"):
        return Path(env["KIOSK_CONFIG"])
    return DEFAULT_PATH


def load_config(path: Path) -> KioskConfig:
    """Read and validate ``path``; raise :class:`ConfigError` listing every problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file. Copy config/kiosk.toml from the kiosk package to {path} and edit it, "
            "or pass --config PATH (or set KIOSK_CONFIG)"
        ) from None
    except PermissionError:
        raise ConfigError(f"{path}: not readable by this user; check its owner and mode (ls -l {path})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, *, source: str = "<config>") -> KioskConfig:
    """Validate TOML ``text``; ``source`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {_describe_toml_error(exc)}") from None
    try:
        return KioskConfig.model_validate(data)
    except ValidationError as exc:
        problems = [format_problem(err, source=source, text=text) for err in exc.errors()]
        noun = "problem" if len(problems) == 1 else "problems"
        raise ConfigError(f"{source}: {len(problems)} {noun}:\n" + "\n".join(f"  - {p}" for p in problems)) from None


def _describe_toml_error(exc: tomllib.TOMLDecodeError) -> str:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if match:
        head = message[: match.start()].strip()
        return f"line {match.group(1)}, column {match.group(2)}: {head}"
    return message


def format_problem(err: Mapping[str, Any], *, source: str, text: str) -> str:
    """Turn one pydantic error into ``key (line N): what is wrong; expected ...``."""
    loc = tuple(str(part) for part in err.get("loc", ()))
    key = ".".join(loc) if loc else "(top level)"
    line = find_line(text, loc)
    where = f"{key} (line {line})" if line else key
    kind = err.get("type", "")
    message = str(err.get("msg", "invalid"))
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "extra_forbidden":
        return f"{where}: unknown key{_suggest(loc)}"
    if kind == "missing":
        section = loc[-1] if loc else ""
        if section and _model_at(loc) is not None:
            return f"{key}: missing section [{key}]; add it (see config/kiosk.toml for every key)"
        return f"{key}: required key is missing"
    message = with_lines(message, text)
    shown = ""
    if "input" in err and not any(is_sensitive_key(part) for part in loc) and not isinstance(err["input"], dict):
        shown = f" (got {err['input']!r})"
    return f"{where}: {message}{shown}"


def with_lines(message: str, text: str) -> str:
    """Add ``(line N)`` after the first mention of each dotted key in a message (``leds.pin (line 12)``)."""

    seen: set[str] = set()

    def annotate(match: re.Match[str]) -> str:
        key = match.group(0)
        if key in seen:
            return key
        seen.add(key)
        line = find_line(text, tuple(key.split(".")))
        return f"{key} (line {line})" if line else key

    return re.sub(
        r"\b(?:device|broker|audio|trigger|session|leds|control|daemon)(?:\.[a-z_]+)+\b(?! \(line)", annotate, message
    )


def _suggest(loc: Sequence[str]) -> str:
    if not loc:
        return ""
    model = _model_at(loc[:-1])
    known = list(model.model_fields) if model is not None else []
    if not known:
        return ""
    matches = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    parent = ".".join(loc[:-1])
    if matches:
        full = f"{parent}.{matches[0]}" if parent else matches[0]
        return f"; did you mean '{full}'?"
    return f"; known keys here: {', '.join(known)}"


def _model_at(loc: Sequence[str]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = KioskConfig
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        model = _model_class(model.model_fields[part].annotation)
    return model


def _model_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        for arg in typing.get_args(annotation):
            found = _model_class(arg)
            if found is not None:
                return found
    return None


def find_line(text: str, loc: Sequence[str]) -> int | None:
    """The line that sets ``loc`` (a key inside its [table], or the table itself), for messages; None if not found."""
    if not loc:
        return None
    table, key = ".".join(loc[:-1]), loc[-1]
    current = ""
    key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for number, raw in enumerate(text.splitlines(), start=1):
        header = re.match(r"^\s*\[+\s*([^\]]+?)\s*\]+", raw)
        if header:
            current = header.group(1).replace(" ", "")
            if current == ".".join(loc):
                return number
            continue
        if current == table and key_re.match(raw):
            return number
    return None
