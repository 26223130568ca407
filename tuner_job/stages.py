"""A staged search in one chief: the article's workflow as one Kubernetes Job.

`stages: random:60,bayesian:40` runs `<run>-s1` with the first tuner; then the
chief narrows the space around stage 1's `stage_top` best trials
(`narrowing.next_stage_config`, as `tunectl narrow` does) and runs `<run>-s2`
with the next tuner, warm-started from stage 1; and so on. The workers stay: a
stage that ends tells them to wait (`OracleServer(next_run=...)`), and each
trial names the run it belongs to. `tunectl study` runs exactly this.

A restarted chief walks the stages again: a finished stage reloads as complete
at once, and its narrowing gives the same next space. A stage in which no
trial completed fails (`SearchProgress.conclusion`), so the next is never
narrowed around nothing; a stage that cannot be narrowed otherwise (the
previous run is gone) ends the chief with exit 2 and one line, and marks the
next run failed so that the waiting workers stop.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tuner_job.config import SearchConfig, parse_stages, stage_run
from tuner_job.env import Role
from tuner_job.errors import NarrowingError
from tuner_job.layout import RunPaths, atomic_write_json
from tuner_job.narrowing import NarrowResult, next_stage_config

__all__ = ["stage_config", "run_staged_chief"]

log = logging.getLogger("tuner_job.chief")


def stage_config(config: SearchConfig, index: int, shared_dir: Path) -> tuple[SearchConfig, NarrowResult | None]:
    """The config of stage `index` (1-based) of the staged search `config`.

    Stage 1 is `config` with the first stage's tuner and budget; a later stage
    is narrowed around the previous stage's run on `shared_dir` (which must
    have completed trials), with `warm_start` pointing at it.

    Raises:
        NarrowingError: the previous stage cannot be narrowed around; the
            message names the stage and the run.
    """
    assert config.stages is not None
    stage = parse_stages(config.stages)[index - 1]
    run = stage_run(config.run, index)
    if index == 1:
        return config.model_copy(update={"run": run, "tuner": stage.tuner, "max_trials": stage.max_trials, "stages": None}), None
    previous = stage_run(config.run, index - 1)
    try:
        result, narrowed = next_stage_config(
            shared_dir, previous, new_run=run, tuner=stage.tuner, max_trials=stage.max_trials, top_k=config.stage_top
        )
    except NarrowingError as exc:
        raise NarrowingError(f"stage {index}: cannot narrow the space around run {previous}: {exc}") from None
    return narrowed, result


def _log_narrowing(index: int, previous: str, result: NarrowResult) -> None:
    log.info(
        "stage %d: space narrowed around the top %d of %d completed trials of %s (%s)",
        index, len(result.top_ids), result.completed, previous, "higher is better" if result.direction == "max" else "lower is better",
    )  # fmt: skip
    for row in result.rows:
        after = "unchanged" if row.after == row.before else row.after
        log.info("  %-24s %-28s -> %-28s %s", row.name, row.before, after, row.note)


def run_staged_chief(config: SearchConfig, shared_dir: Path, role: Role, fresh: bool = False) -> int:
    """Run every stage of `config.stages` in turn on one oracle port; 0 when the last one completed.

    Raises:
        NarrowingError: a stage cannot be narrowed (exit 2); the next run's
            status.json says "failed", so workers waiting for it stop.
        SearchFailedError: a stage failed (exit 1); later stages do not run.
    """
    from tuner_job.chief import run_chief

    assert config.stages is not None
    stages = parse_stages(config.stages)
    for index, stage in enumerate(stages, start=1):
        run = stage_run(config.run, index)
        next_run = stage_run(config.run, index + 1) if index < len(stages) else None
        try:
            stage_cfg, result = stage_config(config, index, shared_dir)
        except NarrowingError as exc:
            atomic_write_json(RunPaths(shared_dir, run).status, {"state": "failed", "message": str(exc)})
            raise
        if result is not None:
            _log_narrowing(index, stage_run(config.run, index - 1), result)
        warm = f", warm start from {stage_cfg.warm_start}" if stage_cfg.warm_start else ""
        log.info("stage %d of %d: run %s, %s, %d trials%s", index, len(stages), run, stage.tuner, stage.max_trials, warm)
        run_chief(stage_cfg, RunPaths(shared_dir, run), role, fresh=fresh, next_run=next_run)
    return 0
