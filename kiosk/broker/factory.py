"""Building the configured broker: one place that checks the broker config beyond its schema and wires a dialect."""

from __future__ import annotations

import httpx

from kiosk.config import KioskConfig
from kiosk.errors import ConfigError
from kiosk.secret import SecretSource

from .base import Broker
from .http import BrokerHttp
from .livekit_dialects import LiveKitEndpointBroker, SelfMintBroker
from .policy import require_secure_url
from .vendors import LyzrBroker, OsharaBroker


def make_broker(config: KioskConfig, *, client: httpx.AsyncClient, secret: SecretSource | None = None) -> Broker:
    """The broker ``config.broker`` describes, using ``client`` for HTTP; raise :class:`ConfigError` if unusable.

    ``secret`` defaults to the source named by ``broker.api_key_*``.
    """
    broker = config.broker
    device = config.device
    if secret is None:
        secret = SecretSource.from_broker(broker)
    identity, overrides = device.identity, dict(broker.overrides)
    if broker.dialect == "self":
        if broker.livekit_url is None or broker.livekit_api_key is None or secret is None:
            raise ConfigError("broker: dialect 'self' needs livekit_url, livekit_api_key and an api_key_* source")
        return SelfMintBroker(
            livekit_url=require_secure_url(broker.livekit_url, key="broker.livekit_url"),
            api_key=broker.livekit_api_key,
            secret=secret,
            name=device.name,
            agent_name=broker.agent_name,
            room_prefix=broker.room_prefix,
            ttl_s=broker.token_ttl_s,
            identity=identity,
            overrides=overrides,
        )
    if broker.url is None:
        raise ConfigError(f"broker.url: dialect {broker.dialect!r} needs the broker's https:// address")
    url = require_secure_url(broker.url, key="broker.url")
    http = BrokerHttp(client=client, dialect=broker.dialect, timeout_s=broker.timeout_s, secret=secret)
    if broker.dialect == "livekit":
        return LiveKitEndpointBroker(
            http=http,
            url=url,
            name=device.name,
            agent_name=broker.agent_name,
            room_prefix=broker.room_prefix,
            timeout_s=broker.timeout_s,
            identity=identity,
            overrides=overrides,
        )
    if not broker.agent_id:
        raise ConfigError(f"broker.agent_id: dialect {broker.dialect!r} needs the vendor's agent id")
    if broker.dialect == "lyzr":
        return LyzrBroker(
            http=http,
            url=url,
            agent_id=broker.agent_id,
            identity=identity,
            overrides=overrides,
            timeout_s=broker.timeout_s,
        )
    return OsharaBroker(
        http=http,
        url=url,
        agent_id=broker.agent_id,
        identity=identity,
        overrides=overrides,
        timeout_s=broker.timeout_s,
    )
