"""`python -m tuner_job`: the entrypoint of every chief, worker and local process."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from tuner_job.contract import DEFAULT_CONFIG, ENV_CONFIG, ENV_SHARED_DIR, ENV_TUNER_ID, SHARED_MOUNT
from tuner_job.errors import EXIT_BAD_INPUT, EXIT_CRASH, TunerJobError

__all__ = ["main"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tuner_job",
        description=f"Run one process of a distributed KerasTuner search. The role comes from {ENV_TUNER_ID}: "
        '"chief" hosts the oracle, "tuner<i>" trains trials.',
    )
    parser.add_argument("--config", default=os.environ.get(ENV_CONFIG, DEFAULT_CONFIG), help=f"search.yaml (env {ENV_CONFIG})")
    parser.add_argument("--shared-dir", default=os.environ.get(ENV_SHARED_DIR, SHARED_MOUNT), help=f"the shared volume (env {ENV_SHARED_DIR})")
    parser.add_argument("--fresh", action="store_true", help="chief only: delete this run's folder and start over")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the search (config, data, hypermodel, space, objective; one training step on blank images) and exit: "
        "0 when it can start, 2 with one line naming the mistake (tunectl local runs this before any process)",
    )
    return parser.parse_args(argv)


def _check(config_file: str, shared: Path, fresh: bool) -> int:
    """`--check`: the checks of `prepare.check_search`, without a role, a port or a write."""
    from tuner_job.config import load_config
    from tuner_job.prepare import check_search

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    config = load_config(config_file)
    if not shared.is_dir():
        raise TunerJobError(f"shared directory not found: {shared}")
    print(check_search(config, shared.resolve(), fresh=fresh), flush=True)
    return 0


def _configure_logging(tuner_id: str, under_launcher: bool) -> None:
    """Lines say the role once: in the format, or in `tunectl local`'s prefix when it started us."""
    role = "" if under_launcher else f"{tuner_id} "
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {role}%(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
        force=True,
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _permission_message(exc: PermissionError, shared: Path) -> str:
    """One line for a volume this process may not write: who it is, who owns the folder, the fix."""
    path = Path(exc.filename) if exc.filename else shared
    folder = next((p for p in (path, *path.parents) if p.exists()), path)
    try:
        info = folder.stat()
        owner = f"; {folder} belongs to uid {info.st_uid} gid {info.st_gid}, mode {info.st_mode & 0o7777:o}"
    except OSError:
        owner = ""
    me = f"uid {os.getuid()} gid {os.getgid()}"
    where = "the shared volume" if shared.resolve() in (path.resolve(), *path.resolve().parents) else "a folder"
    return (
        f"permission denied on {where}: {exc.strerror or exc} ({path}), this process runs as {me}{owner}; "
        "on Kubernetes set storage.fixOwnership=true (an init container gives the volume to the pods' user), "
        "or make the folder writable by this user"
    )


def main(argv: list[str] | None = None) -> int:
    """Run this process's role (`env.read_role`) and return its exit code.

    Returns:
        0 completed, 1 the search failed, 2 bad input or another chief holds
        the run (one `error: ...` line on stderr, never worth a restart), 3 a
        worker gave up waiting for the chief, 4 another chief took the run
        over (this one stopped, writing nothing more), 70 an unexpected crash
        (traceback; worth a restart), 128 + signum when stopped by SIGTERM
        (143), SIGINT (130) or SIGHUP (129), after leaving its files whole.
    """
    from tuner_job import stopping

    stopping.install(hard_exit_after=stopping.HARD_EXIT_AFTER)  # first: Kubernetes may stop a pod while TensorFlow still loads
    args = _parse(argv)
    from tuner_job.config import load_config, stage_run
    from tuner_job.devices import configure_threads
    from tuner_job.env import read_role
    from tuner_job.layout import RunPaths

    shared = Path(args.shared_dir)
    try:
        if args.check:
            return _check(args.config, shared, args.fresh)
        role = read_role()
        _configure_logging(role.tuner_id, role.under_launcher)
        # Before TensorFlow is imported: its thread pools and OpenMP's read these.
        cores = configure_threads()
        if cores is not None:
            logging.getLogger("tuner_job").info("CPU limit %d: TensorFlow and OpenMP use %d threads", cores, cores)
        config = load_config(args.config)
        if not shared.is_dir():
            raise TunerJobError(f"shared directory not found: {shared}")
        paths = RunPaths(shared.resolve(), config.run)
        if args.fresh and not role.is_chief:
            raise TunerJobError("--fresh is for the chief only: workers never delete anything")
        if role.is_chief and role.oracle_port:
            from tuner_job.chief_startup import start_startup_health

            # Probes are answered while TensorFlow loads and the data is waited for and decoded;
            # a port that is taken ends the chief here, before anything is loaded.
            start_startup_health(role.oracle_host, role.oracle_port, required=True)
        if role.is_chief and config.stages:
            from tuner_job.stages import run_staged_chief

            return run_staged_chief(config, shared.resolve(), role, fresh=args.fresh)
        if role.is_chief:
            from tuner_job.chief import run_chief

            return run_chief(config, paths, role, fresh=args.fresh)
        if config.stages:
            paths = RunPaths(shared.resolve(), stage_run(config.run, 1))
        from tuner_job.worker import run_worker

        return run_worker(config, paths, role)
    except TunerJobError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except PermissionError as exc:
        # Retrying will not make the volume writable: bad input, not a crash.
        print(f"error: {_permission_message(exc, shared)}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except stopping.Stopped as stop:
        logging.getLogger("tuner_job").info("stopped by %s", stopping.signal_name(stop.signum))
        return stop.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception:
        # A bug or a lost volume, not a verdict on the search: exit with a code
        # that Kubernetes and `tunectl local` retry (1 means "search failed").
        traceback.print_exc()
        return EXIT_CRASH


if __name__ == "__main__":
    code = main()
    # Everything is written and fsynced by now. TensorFlow's interpreter
    # teardown takes 3-10 s on a busy node, which would keep a finished chief
    # (and the Job) alive for nothing: leave at once.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # the reader is gone (a launcher killed): the exit code still matters
            pass
    os._exit(code)
