"""`python -m bench.chiefs {stock,ours,noop} ...`: a chief hosting the same oracle, stock or ours.

Both host a `RandomSearchOracle` over a space declared up front (no hypermodel
is built), objective `val_loss`:

- stock: KerasTuner's own `oracle_chief.start_server(oracle)` (through
  `tuner_job._kt.serve_stock_chief`), what a stock KerasTuner chief runs: one
  serving thread, `oracle.json` rewritten on every change, the per-trial
  display, and an exit check every 20 s.
- ours: `tuner_job.oracle_server.OracleServer` on grpc.aio, as `tuner_job.chief` runs it
  (holding the run's lease: every write checks the fence).
- noop: the floor, not a chief. A grpc.aio server on KerasTuner's wire that
  hands out one fixed trial proto under new ids, keeps no state, writes
  nothing and imports no TensorFlow. What the simulated workers get from it is
  the best this harness can measure on this machine.

On exit it writes a small JSON report (`--report`): its CPU seconds, when the
search ended, and when it stopped serving.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

from bench.common import write_json


def space():
    from keras_tuner import HyperParameters

    hp = HyperParameters()
    hp.Int("units", min_value=8, max_value=512, step=8)
    hp.Choice("activation", ["relu", "tanh", "gelu"])
    hp.Float("learning_rate", min_value=1e-5, max_value=1e-1, sampling="log")
    hp.Float("dropout", min_value=0.0, max_value=0.5)  # continuous: no two trials collide
    return hp


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_stock(directory: Path, port: int, max_trials: int, seed: int) -> dict:
    import keras_tuner

    from tuner_job import _kt
    from tuner_job.contract import ENV_ORACLE_IP, ENV_ORACLE_PORT

    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_loss", "min"), max_trials=max_trials, hyperparameters=space(), seed=seed
    )
    os.environ[ENV_ORACLE_IP] = "127.0.0.1"
    os.environ[ENV_ORACLE_PORT] = str(port)
    _kt.serve_stock_chief(oracle, str(directory), "stock")  # returns when it sees every tuner told STOPPED
    return {
        "trials": len(oracle.trials),
        "completed": sum(t.status == "COMPLETED" for t in oracle.trials.values()),
        "serving_stopped_at": time.time(),
    }


async def _serve_ours(directory: Path, port: int, max_trials: int, seed: int) -> dict:
    from tuner_job import _kt
    from tuner_job.chief_lease import ChiefLease
    from tuner_job.layout import RunPaths
    from tuner_job.oracle_server import OracleServer

    oracle = _kt.make_oracle("random", objective="val_loss", max_trials=max_trials, epochs=1, seed=seed, hyperparameters=space())
    paths = RunPaths(directory, "ours")
    lease = ChiefLease(paths, 30.0, f"127.0.0.1:{port}")  # as the chief holds its run: every group checks the fence
    lease.acquire()
    server = OracleServer(oracle, paths, lease_seconds=600, max_consecutive_failed_trials=max_trials + 1, fence=lease.fence)
    server.restore()
    await server.start("127.0.0.1", port)
    await server.wait()
    lease.release()
    return {
        "trials": len(oracle.trials),
        "completed": server.progress.scoreboard.completed,
        "state": server.progress.state,
        "search_finished_at": server.progress.finished_at,
        "serving_stopped_at": time.time(),
        "commits": server.store.commits,
    }


async def _serve_noop(port: int, max_trials: int) -> dict:
    import grpc

    from tuner_job import _kt_wire

    wire = _kt_wire.load()
    pb, status = wire.service_pb2, wire.keras_tuner_pb2.TrialStatus
    template = wire.keras_tuner_pb2.Trial(status=status.RUNNING)
    template.hyperparameters.values.values["units"].int_value = 64  # a trial-sized message
    template.hyperparameters.values.values["learning_rate"].float_value = 1e-3
    done = asyncio.Event()
    counts = {"handed": 0, "ended": 0}

    class Noop(wire.service_pb2_grpc.OracleServicer):
        async def GetSpace(self, request, context):  # noqa: N802
            return pb.GetSpaceResponse()

        async def CreateTrial(self, request, context):  # noqa: N802
            if counts["handed"] >= max_trials:
                await done.wait()  # as ours: the budget is spent, wait for the end
                return pb.CreateTrialResponse(trial=wire.keras_tuner_pb2.Trial(status=status.STOPPED))
            counts["handed"] += 1
            trial = wire.keras_tuner_pb2.Trial()
            trial.CopyFrom(template)
            trial.trial_id = str(counts["handed"])
            return pb.CreateTrialResponse(trial=trial)

        async def UpdateTrial(self, request, context):  # noqa: N802
            return pb.UpdateTrialResponse(trial=wire.keras_tuner_pb2.Trial(trial_id=request.trial_id, status=status.RUNNING))

        async def EndTrial(self, request, context):  # noqa: N802
            counts["ended"] += 1
            if counts["ended"] >= max_trials:
                done.set()
            return pb.EndTrialResponse()

    server = grpc.aio.server()
    wire.service_pb2_grpc.add_OracleServicer_to_server(Noop(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await done.wait()
    finished = time.time()
    await asyncio.sleep(1.0)  # as ours lingers, so waiting workers hear STOPPED
    await server.stop(grace=0.5)
    return {"trials": counts["handed"], "completed": counts["ended"], "search_finished_at": finished, "serving_stopped_at": time.time()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chiefs")
    parser.add_argument("kind", choices=["stock", "ours", "noop"])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-trials", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.kind == "stock":
        report = run_stock(args.dir, args.port, args.max_trials, args.seed)
    elif args.kind == "noop":
        report = asyncio.run(_serve_noop(args.port, args.max_trials))
    else:
        report = asyncio.run(_serve_ours(args.dir, args.port, args.max_trials, args.seed))
    report.update(kind=args.kind, cpu_seconds=_cpu(), exiting_at=time.time())
    write_json(args.report, report)
    if args.kind != "stock":
        # As `python -m tuner_job` ends a chief: everything is flushed, skip
        # TensorFlow's interpreter teardown (1-10 s). The stock chief exits as it does.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
