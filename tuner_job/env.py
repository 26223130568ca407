"""The process's role and the chief's address, read and checked in one place."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from tuner_job.contract import CHIEF_ID, ENV_LAUNCHER, ENV_ORACLE_IP, ENV_ORACLE_PORT, ENV_TUNER_ID, ORACLE_PORT
from tuner_job.errors import ConfigError

__all__ = ["Role", "read_role", "DEFAULT_PORT"]

DEFAULT_PORT = ORACLE_PORT
_WORKER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Role:
    """Who this process is: its tuner id, and the oracle's address (bound by the chief, dialled by a worker)."""

    tuner_id: str
    oracle_host: str
    oracle_port: int
    #: Started by `tunectl local` (`ENV_LAUNCHER`): its prefix names the role, and it prints the results.
    under_launcher: bool = False

    @property
    def is_chief(self) -> bool:
        # Exactly "chief": stock KerasTuner treats any id *containing* "chief"
        # (e.g. "mischief-0") as a chief.
        return self.tuner_id == CHIEF_ID

    @property
    def address(self) -> str:
        """`host:port`, as gRPC dials it."""
        return f"{self.oracle_host}:{self.oracle_port}"


def read_role(environ: Mapping[str, str] | None = None) -> Role:
    """The role from `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`.

    Args:
        environ: the variables to read (default: `os.environ`).

    Returns:
        The `Role` (`under_launcher` from `TUNECTL_LOCAL`). Without an address, the chief binds 0.0.0.0 and a worker
        dials 127.0.0.1; the port defaults to 8000.

    Raises:
        ConfigError: the tuner id is missing, contains "chief" without being
            "chief", or has characters a file name cannot; only one of the
            address variables is set; the port is not a number in 1..65535.
    """
    env = os.environ if environ is None else environ
    tuner_id = env.get(ENV_TUNER_ID)
    if not tuner_id:
        raise ConfigError(f'environment variable "{ENV_TUNER_ID}" is not set: use "{CHIEF_ID}" or "tuner<i>"')
    if tuner_id != CHIEF_ID:
        if CHIEF_ID in tuner_id:
            raise ConfigError(f'{ENV_TUNER_ID}={tuner_id!r} contains "chief" but is not "chief": name workers "tuner<i>"')
        if not _WORKER_ID.match(tuner_id):
            raise ConfigError(f"{ENV_TUNER_ID}={tuner_id!r} must be letters, digits, '.', '_' or '-'")
    host = env.get(ENV_ORACLE_IP)
    port_text = env.get(ENV_ORACLE_PORT)
    if host and not port_text:
        raise ConfigError(f'environment variable "{ENV_ORACLE_IP}" was set, but "{ENV_ORACLE_PORT}" was not')
    if port_text and not host:
        raise ConfigError(f'environment variable "{ENV_ORACLE_PORT}" was set, but "{ENV_ORACLE_IP}" was not')
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{ENV_ORACLE_PORT} must be a port number, but got {port_text!r}") from None
    # The chief binds this address: it must be 0.0.0.0 (or a local one) there.
    host = host or ("0.0.0.0" if tuner_id == CHIEF_ID else "127.0.0.1")
    return Role(tuner_id=tuner_id, oracle_host=host, oracle_port=port, under_launcher=bool(env.get(ENV_LAUNCHER)))
