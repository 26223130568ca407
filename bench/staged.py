"""Staged search vs one random search with the same budget (issue 6's measurement).

    python -m bench.staged                       # 3 seeds, random:6 + bayesian:6 vs random:12, 4 epochs
    python -m bench.staged --seeds 1 --stage-trials 2 --epochs 1   # a quick check of the machinery

For each seed, on the synthetic ToonVision-like dataset (`cluster.synth`):

- two-stage: `tunectl study --stages random:K,bayesian:K` (stage 2 searches the
  space narrowed around stage 1's top trials, warm-started with them);
- single: `tunectl local --tuner random --max-trials 2K`.

Same config, seed, epochs and workers; the figure is the best `val_loss` each
found (the study's over both stages). It prints a table and writes
`bench/staged.json`. A measurement, not a test: with budgets this small the
noise between seeds is large.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _best(run_dir: Path) -> tuple[float | None, int]:
    """Best completed score in the run's results.json, and how many trials it trained (seeded ones excluded)."""
    results = json.loads((run_dir / "results.json").read_text())
    trials = results.get("trials") or []
    scores = [t["score"] for t in trials if t.get("status") == "COMPLETED" and t.get("score") is not None]
    trained = sum(1 for t in trials if not str(t.get("worker") or "").startswith("warm-start:"))
    return (min(scores) if scores else None), trained


def _run(argv: list[str], log: Path, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    with open(log, "w") as handle:
        code = subprocess.run(argv, cwd=REPO, env=_env(), stdout=handle, stderr=subprocess.STDOUT, timeout=timeout).returncode
    return code, time.monotonic() - started


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from cluster.synth import synthesize

    shared = root / "shared"
    synthesize(shared / "data" / "toonvision", per_class=args.per_class, size=tuple(args.size), seed=7)
    rows = []
    for seed in range(args.seeds):
        config = root / f"search-{seed}.yaml"
        config.write_text(
            "data: data/toonvision\n"
            f"image_size: [{args.size[0]}, {args.size[1]}]\n"
            f"epochs: {args.epochs}\nbatch_size: {args.batch_size}\nseed: {seed}\nlease_seconds: 60\nchief_wait_seconds: 120\n"
        )
        common = ["--config", str(config), "--shared-dir", str(shared), "--workers", str(args.workers), "--tensorboard-port", "0", "--fresh"]
        k = args.stage_trials
        staged_code, staged_secs = _run(
            [sys.executable, "-m", "cluster", "study", *common, "--run", f"staged-{seed}", "--stages", f"random:{k},bayesian:{k}",
             "--top", str(args.top)],
            root / f"staged-{seed}.log", args.timeout,
        )
        single_code, single_secs = _run(
            [sys.executable, "-m", "cluster", "local", *common, "--run", f"single-{seed}", "--tuner", "random", "--max-trials", str(2 * k)],
            root / f"single-{seed}.log", args.timeout,
        )
        runs = shared / "runs"
        s1, s1_trained = _best(runs / f"staged-{seed}-s1") if staged_code == 0 else (None, 0)
        s2, s2_trained = _best(runs / f"staged-{seed}-s2") if staged_code == 0 else (None, 0)
        single, single_trained = _best(runs / f"single-{seed}") if single_code == 0 else (None, 0)
        staged = min((v for v in (s1, s2) if v is not None), default=None)
        row = {
            "seed": seed,
            "staged_best_val_loss": staged,
            "stage1_best": s1,
            "stage2_best": s2,
            "staged_trials_trained": s1_trained + s2_trained,
            "staged_seconds": round(staged_secs, 1),
            "single_best_val_loss": single,
            "single_trials_trained": single_trained,
            "single_seconds": round(single_secs, 1),
            "staged_no_worse": None if staged is None or single is None else staged <= single,
            "exit_codes": {"staged": staged_code, "single": single_code},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    verdicts = [r["staged_no_worse"] for r in rows if r["staged_no_worse"] is not None]
    return {
        "dataset": {"per_class": args.per_class, "size": list(args.size), "classes": 4},
        "budget": {"staged": f"random:{args.stage_trials},bayesian:{args.stage_trials}", "single": f"random:{2 * args.stage_trials}",
                   "epochs": args.epochs, "workers": args.workers, "top": args.top},
        "seeds": rows,
        "staged_no_worse_in": f"{sum(verdicts)} of {len(verdicts)} seeds",
        "staged_no_worse_in_most_seeds": bool(verdicts) and sum(verdicts) * 2 > len(verdicts),
    }


def table(report: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [f"{'seed':>4}  {'staged best':>11}  {'(s1, s2)':>17}  {'single best':>11}  {'staged <= single':>16}  {'secs staged/single':>18}"]
    for r in report["seeds"]:
        lines.append(
            f"{r['seed']:>4}  {show(r['staged_best_val_loss']):>11}  {'(' + show(r['stage1_best']) + ', ' + show(r['stage2_best']) + ')':>17}  "
            f"{show(r['single_best_val_loss']):>11}  {show(r['staged_no_worse']):>16}  "
            f"{str(r['staged_seconds']) + ' / ' + str(r['single_seconds']):>18}"
        )
    lines.append(f"two-stage no worse in {report['staged_no_worse_in']} (budget {report['budget']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.staged", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--stage-trials", type=int, default=6, help="trials per stage; the single search gets twice as many")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--top", type=int, default=3, help="stage 2 narrows around stage 1's K best trials")
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--size", type=int, nargs=2, default=(120, 40), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per search command")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "staged.json")
    parser.add_argument("--keep", type=Path, default=None, help="keep the shared folder and logs here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = measure(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-staged-") as tmp:
            report = measure(args, Path(tmp))
    report["seconds"] = round(time.monotonic() - started, 1)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
