"""Token brokers: get a LiveKit grant from the configured broker, and end every session that was started.

Wiring (once, in the daemon's ``run()``)::

    client = make_client(config.broker)                      # kept for the daemon's life
    broker = make_broker(config, client=client)              # ConfigError if the broker config is unusable
    keeper = SessionKeeper(broker=broker, ledger=SessionLedger(config.daemon.state_dir),
                           end_timeout_s=config.broker.timeout_s, end_retry_max_s=config.broker.end_retry_max_s)
    await keeper.recover()                                   # end sessions a crash left open
    started = await keeper.start(deadline=time.monotonic() + config.session.connect_timeout_s)
    try:
        ...                                                  # join started.grant.room at started.grant.server_url
    finally:
        await keeper.end(started)                            # ended at the broker on every exit path
    await keeper.aclose(); await client.aclose()
"""

from __future__ import annotations

from .base import Broker, OnRoom
from .clock import ServerClock
from .connection import ConnectionDetails, EndTicket, TokenClaims, clock_problem, decode_token
from .factory import make_broker
from .http import BrokerHttpError, make_client
from .keeper import BrokerSession, SessionKeeper
from .ledger import LedgerEntry, SessionLedger

__all__ = [
    "Broker",
    "BrokerHttpError",
    "BrokerSession",
    "ConnectionDetails",
    "EndTicket",
    "LedgerEntry",
    "OnRoom",
    "ServerClock",
    "SessionKeeper",
    "SessionLedger",
    "TokenClaims",
    "clock_problem",
    "decode_token",
    "make_broker",
    "make_client",
]
