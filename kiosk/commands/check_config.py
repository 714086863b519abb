"""``kiosk check-config``: validate a config file and print the effective settings, secrets masked.

Exit 0 when the file is valid (warnings are printed but do not fail), 78 (EX_CONFIG) on any error, with a message
that names the file, the key, what is wrong and what is expected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from typing import Any

from kiosk.cliformat import HelpFormatter, describe
from kiosk.config import KioskConfig
from kiosk.configfile import EX_CONFIG, find_line, load_config, resolve_path, with_lines
from kiosk.errors import ConfigError
from kiosk.redact import MASK, is_sensitive_key, mask_userinfo
from kiosk.secret import SecretSource

_SOURCE_KEYS = {"api_key_file", "api_key_credential", "api_key_env"}


def main(argv: list[str]) -> int:
    """Run ``kiosk check-config``."""
    parser = argparse.ArgumentParser(
        prog="kiosk check-config", description=describe(__doc__), formatter_class=HelpFormatter
    )
    parser.add_argument("path", nargs="?", help="config file (same as --config)")
    parser.add_argument(
        "--config", dest="config", help="config file (default: $KIOSK_CONFIG, else /etc/kiosk/kiosk.toml)"
    )
    parser.add_argument("--json", action="store_true", help="print the effective config as JSON")
    args = parser.parse_args(argv)
    path = resolve_path(args.config or args.path)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"kiosk: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    source = SecretSource.from_broker(config.broker)
    problem = broker_problem(config, source)
    if problem is not None:
        print(f"kiosk: config error: {path}: {with_lines(problem, path.read_text(encoding='utf-8'))}", file=sys.stderr)
        return EX_CONFIG
    status = source.status() if source is not None else None
    warnings: list[str] = []
    if source is not None and status is not None:
        key = f"broker.api_key_{source.kind}"
        line = find_line(path.read_text(encoding="utf-8"), ("broker", key.split(".")[1]))
        where = f"{key} (line {line})" if line else key
        if not status.readable:
            print(f"kiosk: config error: {path}: {where}: {status.problem}", file=sys.stderr)
            return EX_CONFIG
        if status.warning:
            warnings.append(f"{path}: {where}: {status.warning}")
    secret_line = "none (this dialect needs no key)" if status is None else f"{MASK} from {status.describe()}"
    if args.json:
        data = masked(config.model_dump(mode="json"))
        data["broker"]["secret"] = secret_line
        print(json.dumps(data, indent=2, sort_keys=False))
    else:
        print(f"# {path}: valid")
        print(f"# broker secret: {secret_line}")
        print(render_toml(masked(config.model_dump(mode="json"))), end="")
    for warning in warnings:
        print(f"kiosk: warning: {warning}", file=sys.stderr)
    return 0


def broker_problem(config: KioskConfig, source: SecretSource | None) -> str | None:
    """What ``run`` would refuse when it builds the broker client and broker (an http:// broker elsewhere, an
    unreadable ``ca_file``), as a message naming the key; None when it builds."""
    from kiosk.broker import make_broker, make_client

    try:
        client = make_client(config.broker)
    except ConfigError as exc:
        return str(exc)
    try:
        make_broker(config, client=client, secret=source)
    except ConfigError as exc:
        return str(exc)
    finally:
        asyncio.run(client.aclose())
    return None


def masked(data: Mapping[str, Any]) -> dict[str, Any]:
    """Copy ``data`` with the value of every key that looks secret replaced by ``***`` (source names are kept)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out[key] = masked(value)
        elif is_sensitive_key(key) and key not in _SOURCE_KEYS and not key.endswith("_ttl_s") and value is not None:
            out[key] = MASK
        elif isinstance(value, str) and "@" in value and "://" in value:
            out[key] = mask_userinfo(value)
        else:
            out[key] = value
    return out


def render_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Render nested mappings as TOML tables; unset values appear as comments."""
    scalars: list[str] = []
    tables: list[str] = []
    for key, value in data.items():
        if isinstance(value, Mapping) and (not prefix or value):
            name = f"{prefix}.{key}" if prefix else key
            tables.append(f"\n[{name}]\n" + render_toml(value, name))
        elif value is None:
            scalars.append(f"#{key} = (unset)")
        else:
            scalars.append(f"{key} = {_toml_value(value)}")
    return "".join(line + "\n" for line in scalars) + "".join(tables)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))
