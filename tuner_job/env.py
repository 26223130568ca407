"""The process's role and the chief's address, read and checked in one place."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from tuner_job.errors import ConfigError

__all__ = ["Role", "read_role", "DEFAULT_PORT"]

DEFAULT_PORT = 8000
_WORKER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Role:
    tuner_id: str
    oracle_host: str
    oracle_port: int

    @property
    def is_chief(self) -> bool:
        # Exactly "chief": stock KerasTuner treats any id *containing* "chief"
        # (e.g. "mischief-0") as a chief.
        return self.tuner_id == "chief"

    @property
    def address(self) -> str:
        return f"{self.oracle_host}:{self.oracle_port}"


def read_role(environ: dict[str, str] | None = None) -> Role:
    env = os.environ if environ is None else environ
    tuner_id = env.get("KERASTUNER_TUNER_ID")
    if not tuner_id:
        raise ConfigError('environment variable "KERASTUNER_TUNER_ID" is not set: use "chief" or "tuner<i>"')
    if tuner_id != "chief":
        if "chief" in tuner_id:
            raise ConfigError(f'KERASTUNER_TUNER_ID={tuner_id!r} contains "chief" but is not "chief": name workers "tuner<i>"')
        if not _WORKER_ID.match(tuner_id):
            raise ConfigError(f"KERASTUNER_TUNER_ID={tuner_id!r} must be letters, digits, '.', '_' or '-'")
    host = env.get("KERASTUNER_ORACLE_IP")
    port_text = env.get("KERASTUNER_ORACLE_PORT")
    if host and not port_text:
        raise ConfigError('environment variable "KERASTUNER_ORACLE_IP" was set, but "KERASTUNER_ORACLE_PORT" was not')
    if port_text and not host:
        raise ConfigError('environment variable "KERASTUNER_ORACLE_PORT" was set, but "KERASTUNER_ORACLE_IP" was not')
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise ConfigError(f"KERASTUNER_ORACLE_PORT must be a port number, but got {port_text!r}") from None
    # The chief binds this address: it must be 0.0.0.0 (or a local one) there.
    return Role(tuner_id=tuner_id, oracle_host=host or ("0.0.0.0" if tuner_id == "chief" else "127.0.0.1"), oracle_port=port)
