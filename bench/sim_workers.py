"""`python -m bench.sim_workers`: M simulated KerasTuner workers in one asyncio process.

Each worker has its own gRPC channel (its own connection, as a worker pod
would) and KerasTuner's own stubs, loaded by `tuner_job._kt_wire` without
TensorFlow. Its loop is a stock worker's, with the training replaced by a sleep:

    CreateTrial -> (STOPPED: exit; IDLE: ask again at once, as a stock worker does)
    sleep T ("training") -> UpdateTrial(val_loss) -> EndTrial(COMPLETED)

It writes the raw measurements as JSON (`--out`): every RPC's latency, every
training interval, every EndTrial's reply time, samples of the chief's CPU
time (by pid, from /proc) as trials complete, and the client's own load (CPU
seconds, event-loop lag), to show the client is not the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import time
from pathlib import Path
from typing import Any

import grpc

from bench.common import proc_cpu_seconds, write_json
from tuner_job import _kt_wire

wire = _kt_wire.load()
pb = wire.service_pb2
TrialStatus = wire.keras_tuner_pb2.TrialStatus
RPCS = ("CreateTrial", "UpdateTrial", "EndTrial")


class Recorder:
    def __init__(self, workers: int, chief_pid: int | None, sample_every: int):
        self.latency: dict[str, list[float]] = {name: [] for name in RPCS}
        self.latency_at: dict[str, list[float]] = {name: [] for name in RPCS}  # when each call was made (epoch s)
        self.train: list[list[tuple[float, float]]] = [[] for _ in range(workers)]
        self.ends: list[float] = []
        self.idle = 0
        self.stopped_at: list[float | None] = [None] * workers
        self.chief_pid = chief_pid
        self.sample_every = sample_every
        self.samples: list[tuple[int, float, float | None]] = []  # (trials ended, time, chief cpu s)

    def sample(self) -> None:
        cpu = proc_cpu_seconds(self.chief_pid) if self.chief_pid else None
        self.samples.append((len(self.ends), time.time(), cpu))

    def ended(self) -> None:
        self.ends.append(time.time())
        if len(self.ends) % self.sample_every == 0:
            self.sample()


async def _call(rec: Recorder, name: str, method: Any, request: Any, timeout: float) -> Any:
    at = time.time()
    started = time.perf_counter()
    response = await method(request, timeout=timeout, wait_for_ready=True)
    if name == "CreateTrial" and response.trial.status != TrialStatus.RUNNING:
        # No trial: the budget is spent. Ours holds such a call until the search
        # ends (no busy polling); stock answers at once and is asked again.
        name = "CreateTrial (no trial)"
    rec.latency.setdefault(name, []).append((time.perf_counter() - started) * 1000.0)
    rec.latency_at.setdefault(name, []).append(at)
    return response


async def worker(index: int, stub: Any, train_seconds: float, rec: Recorder, rpc_timeout: float) -> None:
    tuner_id = f"tuner{index}"
    rng = random.Random(index)
    while True:
        response = await _call(rec, "CreateTrial", stub.CreateTrial, pb.CreateTrialRequest(tuner_id=tuner_id), rpc_timeout)
        trial = response.trial
        if trial.status == TrialStatus.STOPPED:
            rec.stopped_at[index] = time.time()
            return
        if trial.status == TrialStatus.IDLE:
            rec.idle += 1
            continue
        began = time.time()
        if train_seconds > 0:
            await asyncio.sleep(train_seconds)
        rec.train[index].append((began, time.time()))
        await _call(
            rec, "UpdateTrial", stub.UpdateTrial,
            pb.UpdateTrialRequest(trial_id=trial.trial_id, metrics={"val_loss": rng.random()}, step=0), rpc_timeout,
        )
        trial.status = TrialStatus.COMPLETED
        await _call(rec, "EndTrial", stub.EndTrial, pb.EndTrialRequest(trial=trial), rpc_timeout)
        rec.ended()


async def _loop_lag(lags: list[float], stop: asyncio.Event) -> None:
    period = 0.01
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(period)
        lags.append(max(0.0, time.perf_counter() - started - period) * 1000.0)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(
    address: str, workers: int, train_seconds: float, timeout: float, chief_pid: int | None, sample_every: int, ready_timeout: float
) -> dict[str, Any]:
    rec = Recorder(workers, chief_pid, sample_every)
    channels = [grpc.aio.insecure_channel(address) for _ in range(workers)]
    stubs = [wire.service_pb2_grpc.OracleStub(channel) for channel in channels]
    # Wait for the chief (it may still be importing), then connect every channel.
    ready_started = time.time()
    await stubs[0].GetSpace(pb.GetSpaceRequest(), timeout=ready_timeout, wait_for_ready=True)
    await asyncio.gather(*(stub.GetSpace(pb.GetSpaceRequest(), timeout=ready_timeout, wait_for_ready=True) for stub in stubs))
    ready_seconds = time.time() - ready_started
    lags: list[float] = []
    stop = asyncio.Event()
    lag_task = asyncio.create_task(_loop_lag(lags, stop))
    cpu0 = _cpu()
    started = time.time()
    rec.sample()
    tasks = [asyncio.create_task(worker(i, stubs[i], train_seconds, rec, rpc_timeout=max(timeout, 60.0))) for i in range(workers)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    finished = time.time()
    rec.sample()
    timed_out = bool(pending)
    for task in pending:
        task.cancel()
    errors = sorted({f"{type(t.exception()).__name__}: {str(t.exception())[:300]}" for t in done if t.exception() is not None})
    stop.set()
    await lag_task
    client_cpu = _cpu() - cpu0
    for channel in channels:
        await channel.close()
    return {
        "address": address,
        "workers": workers,
        "train_seconds": train_seconds,
        "ready_seconds": ready_seconds,
        "started": started,
        "finished": finished,
        "timed_out": timed_out,
        "errors": errors,
        "latency_ms": rec.latency,
        "latency_at": rec.latency_at,
        "train": rec.train,
        "ends": rec.ends,
        "stopped_at": rec.stopped_at,
        "idle_answers": rec.idle,
        "samples": rec.samples,
        "client_cpu_seconds": client_cpu,
        "loop_lag_ms": lags,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sim_workers")
    parser.add_argument("--address", required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--train-seconds", type=float, required=True)
    parser.add_argument("--timeout", type=float, required=True, help="seconds for the whole search, after the chief answered")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--chief-pid", type=int)
    parser.add_argument("--sample-every", type=int, default=50, help="sample the chief's CPU every this many ended trials")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.address, args.workers, args.train_seconds, args.timeout, args.chief_pid, args.sample_every, args.ready_timeout))
    write_json(args.out, result)
    return 1 if result["timed_out"] or result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
