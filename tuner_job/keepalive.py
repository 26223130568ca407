"""gRPC keepalive between the workers and the chief: a vanished chief is noticed in seconds.

When the chief's node dies it closes nothing: no FIN, no RST. Without
keepalive a worker's channel keeps sending on the dead TCP connection until
the kernel gives up on it, many minutes later (grpc/grpc-go#3206 describes a
15-minute hang on Kubernetes), longer than `chief_wait_seconds`, so every
worker exits 3 and spends a retry. With keepalive the client pings every
`TUNER_GRPC_KEEPALIVE_SECONDS` (default 30) and drops a connection whose
ping stays unanswered for `TUNER_GRPC_KEEPALIVE_TIMEOUT_SECONDS` (default
20); the channel then reconnects, re-resolving the chief Service's name, so
a chief restarted elsewhere is found.

The server must accept pings that often, idle or not, or it answers GOAWAY
`too_many_pings` and the connection is dropped for nothing: it allows one
every half its own interval, and at least one every 5 s, so workers whose
interval was shortened alone (through `worker.extraEnv`) are accepted too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tuner_job.errors import ConfigError

__all__ = [
    "KEEPALIVE_ENV",
    "KEEPALIVE_TIMEOUT_ENV",
    "client_options",
    "keepalive_seconds",
    "server_options",
]

KEEPALIVE_ENV = "TUNER_GRPC_KEEPALIVE_SECONDS"
KEEPALIVE_TIMEOUT_ENV = "TUNER_GRPC_KEEPALIVE_TIMEOUT_SECONDS"
_DEFAULTS = {KEEPALIVE_ENV: 30.0, KEEPALIVE_TIMEOUT_ENV: 20.0}
# The chief accepts a ping this often even when its own interval is longer.
_SERVER_FLOOR_SECONDS = 5.0


def _seconds(environ: Mapping[str, str], name: str) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return _DEFAULTS[name]
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 3600:
        raise ConfigError(f"{name} must be a number of seconds between 0.1 and 3600, but got {text!r}")
    return value


def keepalive_seconds(environ: Mapping[str, str] | None = None) -> tuple[float, float]:
    """(ping interval, ping timeout) in seconds, from the environment; ConfigError names a bad variable."""
    env = os.environ if environ is None else environ
    return _seconds(env, KEEPALIVE_ENV), _seconds(env, KEEPALIVE_TIMEOUT_ENV)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def client_options(environ: Mapping[str, str] | None = None) -> list[tuple[str, int]]:
    """Channel options of a worker: ping the chief even between calls, and never stop pinging."""
    interval, timeout = keepalive_seconds(environ)
    return [
        ("grpc.keepalive_time_ms", _ms(interval)),
        ("grpc.keepalive_timeout_ms", _ms(timeout)),
        # grpcio 1.85 drops a connection for an unanswered keepalive ping only
        # after this timeout (default 60 s), whatever keepalive_timeout says:
        # measured with a SIGSTOPped server (tests/test_keepalive.py).
        ("grpc.http2.ping_timeout_ms", _ms(timeout)),
        ("grpc.keepalive_permit_without_calls", 1),
        # The default (2) stops pinging an idle connection after two pings.
        ("grpc.http2.max_pings_without_data", 0),
    ]


def server_options(environ: Mapping[str, str] | None = None) -> list[tuple[str, int]]:
    """Server options of the chief: accept the workers' pings, idle or not, at their rate."""
    interval, _ = keepalive_seconds(environ)
    accepted = min(interval / 2, _SERVER_FLOOR_SECONDS)
    return [
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", _ms(accepted)),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(accepted)),
    ]
