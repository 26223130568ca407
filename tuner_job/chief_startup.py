"""What the chief does before its oracle serves: answer health probes, and wait for the dataset.

The chief imports TensorFlow, may wait for a dataset that is pushed after the
deploy, and decodes the whole dataset into the cache before the oracle can
serve. On a large dataset on NFS that takes longer than any startup probe
allows, and a chief killed for it rebuilds the cache in a loop. So from the
process's first second a small gRPC server holds the oracle's port:

- grpc.health.v1 answers SERVING for the process ("", the startup and
  liveness probes) and NOT_SERVING for the oracle (`ORACLE_SERVICE`, the
  readiness probe);
- every other method answers UNAVAILABLE with details that start with
  `PREPARING`: workers retry it like an absent chief, but do not count the
  time against `chief_wait_seconds` (the chief is there, it is preparing).

`stop_startup_health()` closes it right before the oracle's own server binds
the port (the probes may miss one beat). A staged search reopens it between
stages.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tuner_job.contract import ENV_ORACLE_IP, ENV_ORACLE_PORT
from tuner_job.errors import ConfigError, DataError
from tuner_job.keepalive import server_options

__all__ = [
    "bind_error",
    "DATA_WAIT_MARKER",
    "ORACLE_SERVICE",
    "PREPARING",
    "set_phase",
    "start_startup_health",
    "stop_startup_health",
    "wait_for_dataset",
]

log = logging.getLogger("tuner_job.chief")

#: The oracle's gRPC service: also the health service name the readiness probe asks for.
ORACLE_SERVICE = "keras_tuner.Oracle"
#: How an UNAVAILABLE answer of a preparing chief begins.
PREPARING = "chief preparing:"
#: The chief's log line while it waits for its dataset (`tunectl deploy` looks for it).
DATA_WAIT_MARKER = "waiting for the dataset"
# How often the data folder is looked for: inotify does not see NFS or other
# nodes' writes, so it is polled.
_POLL_SECONDS = 2.0
_LOG_EVERY_SECONDS = 60.0


class _Preparing(grpc.GenericRpcHandler):
    """Every method but the health service's: UNAVAILABLE, saying what the chief is doing."""

    def __init__(self) -> None:
        self.phase = "starting"

    def service(self, handler_call_details: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(self._unavailable)

    def _unavailable(self, request: bytes, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAVAILABLE, f"{PREPARING} {self.phase}")


class _StartupHealth:
    def __init__(self, host: str, port: int) -> None:
        self.preparing = _Preparing()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0), *server_options()])
        servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, self.server)
        self.server.add_generic_rpc_handlers((self.preparing,))
        if self.server.add_insecure_port(f"{host}:{port}") == 0:
            raise OSError(f"cannot bind {host}:{port}")
        self.server.start()
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        servicer.set(ORACLE_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)


_lock = threading.Lock()
_current: _StartupHealth | None = None


def bind_error(host: str, port: int) -> ConfigError:
    """Why `host:port` cannot be bound, as one line: the port is in use, or the address is not this machine's.

    A chief that cannot bind its port will not bind it after a restart either:
    bad input (exit 2), never a crash.
    """
    reason = ""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = errno.errorcode.get(exc.errno or 0, "")
    if reason == "EADDRNOTAVAIL":
        return ConfigError(
            f"the oracle cannot bind {host}:{port}: {host} is not an address of this machine ({ENV_ORACLE_IP} on the chief is 0.0.0.0)"
        )
    return ConfigError(
        f"port {port} is in use: the oracle cannot bind {host}:{port}; stop what holds it, or choose another port "
        f"({ENV_ORACLE_PORT}; tunectl local --port)"
    )


def start_startup_health(host: str, port: int, required: bool = False) -> None:
    """Hold `host:port` with the health service until the oracle serves; a no-op when already held.

    Raises:
        ConfigError: `required` (the process's first bind) and the port cannot
            be bound (`bind_error`). Otherwise a failure is only logged: the
            oracle's own bind reports it.
    """
    global _current
    with _lock:
        if _current is not None:
            return
        try:
            _current = _StartupHealth(host, port)
        except (OSError, RuntimeError) as exc:
            if required:
                raise bind_error(host, port) from None
            log.warning("health endpoint not started before the oracle: %s", exc)


def set_phase(phase: str) -> None:
    """What the chief is doing, for the workers' logs (`waiting for data/toonvision`, ...)."""
    with _lock:
        if _current is not None:
            _current.preparing.phase = phase


def stop_startup_health() -> None:
    """Free the port for the oracle's server; a no-op when nothing holds it."""
    global _current
    with _lock:
        if _current is None:
            return
        _current.server.stop(grace=None).wait(5)
        _current = None


def wait_for_dataset(folder: Path, timeout_s: float, name: str | None = None) -> None:
    """Block until `folder` exists, at most `timeout_s` seconds (0: do not wait).

    `tunectl data push` makes the folder appear at once, by a rename, when its
    copy is complete. Raises DataError (exit 2) naming the folder when it does
    not come in time.
    """
    if folder.is_dir():
        return
    dataset = name or folder.name
    hint = f"push it with `tunectl data push DIR --name {dataset}`"
    started = time.monotonic()
    if timeout_s > 0:
        set_phase(f"{DATA_WAIT_MARKER} at {folder}")
        log.info("%s at %s (up to %.0f s, data_wait_seconds): %s", DATA_WAIT_MARKER, folder, timeout_s, hint)
    last_log = started
    while not folder.is_dir():
        now = time.monotonic()
        if now - started >= timeout_s:
            raise DataError(f"data folder not found: {folder} (waited {now - started:.0f} s, data_wait_seconds={timeout_s:g}); {hint}")
        if now - last_log >= _LOG_EVERY_SECONDS:
            log.info("%s at %s (%.0f s so far)", DATA_WAIT_MARKER, folder, now - started)
            last_log = now
        time.sleep(min(_POLL_SECONDS, max(0.05, timeout_s - (now - started))))
    log.info("dataset %s arrived after %.0f s", folder, time.monotonic() - started)
    set_phase("preparing the oracle")
