"""Token brokers: get a LiveKit grant from the configured broker, and end every session that was started.

Wiring (once, in the daemon's ``run()``)::

    client = make_client(config.broker)                      # kept for the daemon's life
    broker = make_broker(config, client=client)              # ConfigError if the broker config is unusable
    keeper = SessionKeeper(broker=broker, ledger=SessionLedger(config.daemon.state_dir),
                           end_timeout_s=config.broker.timeout_s, end_retry_max_s=config.broker.end_retry_max_s)
    await keeper.recover()                                   # end sessions a crash left open
    async with keeper.session(deadline=time.monotonic() + config.session.connect_timeout_s) as grant:
        ...                                                  # join grant.room at grant.server_url
    await keeper.aclose(); await client.aclose()
"""

from __future__ import annotations

from .base import Broker, OnRoom
from .clock import ServerClock
from .factory import make_broker
from .grant import EndTicket, Grant, TokenClaims, clock_problem, decode_token
from .http import BrokerHttpError, make_client
from .keeper import BrokerSession, SessionKeeper
from .ledger import SessionLedger, SessionRecord

__all__ = [
    "Broker",
    "BrokerHttpError",
    "BrokerSession",
    "EndTicket",
    "Grant",
    "OnRoom",
    "ServerClock",
    "SessionKeeper",
    "SessionLedger",
    "SessionRecord",
    "TokenClaims",
    "clock_problem",
    "decode_token",
    "make_broker",
    "make_client",
]
