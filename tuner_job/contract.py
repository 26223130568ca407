"""The contract every process, the chart, the launcher, the tests and the benchmarks share.

Names and numbers that more than one place must agree on (DESIGN.md,
"Processes and their environment"): the oracle's and TensorBoard's ports, the
environment variables a process reads, and where the config and the shared
volume are mounted in a pod. Type them here once; everything else imports them.
"""

from __future__ import annotations

__all__ = [
    "ORACLE_PORT",
    "TENSORBOARD_PORT",
    "CHIEF_ID",
    "ENV_TUNER_ID",
    "ENV_ORACLE_IP",
    "ENV_ORACLE_PORT",
    "ENV_CONFIG",
    "ENV_SHARED_DIR",
    "ENV_LAUNCHER",
    "CONFIG_MOUNT",
    "DEFAULT_CONFIG",
    "SHARED_MOUNT",
    "worker_id",
    "process_env",
    "tensorboard_title",
]

#: The chief's gRPC port (KerasTuner's oracle protocol and the gRPC health service).
ORACLE_PORT = 8000
#: TensorBoard's HTTP port.
TENSORBOARD_PORT = 6006

#: The one tuner id that makes a process the chief (exactly this, see `tuner_job.env`).
CHIEF_ID = "chief"

#: KerasTuner's own variables: the process's tuner id and the chief's address.
ENV_TUNER_ID = "KERASTUNER_TUNER_ID"
ENV_ORACLE_IP = "KERASTUNER_ORACLE_IP"
ENV_ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
#: Ours: the search config, and the shared volume. `tunectl` reads the same
#: `TUNER_SHARED_DIR` for its `--shared-dir` everywhere.
ENV_CONFIG = "TUNER_CONFIG"
ENV_SHARED_DIR = "TUNER_SHARED_DIR"

#: Set (to "1") by `tunectl local` for the processes it starts: its log prefix
#: names each line's role, and it prints the leaderboard itself, so a process
#: leaves the role out of its lines and the chief leaves its leaderboard out.
ENV_LAUNCHER = "TUNECTL_LOCAL"

#: Where a pod finds its config (a ConfigMap) and the shared volume.
CONFIG_MOUNT = "/config"
DEFAULT_CONFIG = f"{CONFIG_MOUNT}/search.yaml"
SHARED_MOUNT = "/shared"


def worker_id(index: int | str) -> str:
    """Worker `index`'s tuner id, `tuner<index>` (the chart's is `tuner$(JOB_COMPLETION_INDEX)`)."""
    return f"tuner{index}"


def process_env(tuner_id: str, oracle_host: str, oracle_port: int, config: str, shared_dir: str) -> dict[str, str]:
    """The variables a chief or worker process is started with, as the chart sets them.

    Args:
        tuner_id: `CHIEF_ID` or `worker_id(i)`.
        oracle_host: the address the chief binds (chief) or dials (worker).
        oracle_port: the oracle's port.
        config: path of the search.yaml.
        shared_dir: path of the shared volume.
    """
    return {
        ENV_TUNER_ID: tuner_id,
        ENV_ORACLE_IP: oracle_host,
        ENV_ORACLE_PORT: str(oracle_port),
        ENV_CONFIG: config,
        ENV_SHARED_DIR: shared_dir,
    }


def tensorboard_title(namespace: str, release: str) -> str:
    """The window title the chart starts a release's TensorBoard with (`--window_title`; its `/data/environment` says it).

    `tunectl tensorboard` tells the release's TensorBoard from another program on the port by it.
    """
    return f"keras-tuner-cluster {namespace}/{release}"
