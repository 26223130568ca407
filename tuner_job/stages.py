"""A staged search in one chief: the article's workflow as one Kubernetes Job.

`stages: random:60,bayesian:40` runs `<run>-s1` with the first tuner; then the
chief narrows the space around stage 1's `stage_top` best trials (as `tunectl
narrow` does) and runs `<run>-s2` with the next tuner, warm-started from stage
1; and so on. The workers stay: a stage that ends tells them to wait
(`OracleServer(next_run=...)`), and each trial names the run it belongs to.

A restarted chief walks the stages again: a finished stage reloads as complete
at once, and its narrowing gives the same next space.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from tuner_job.config import SearchConfig, parse_stages, stage_run
from tuner_job.env import Role
from tuner_job.layout import RunPaths

__all__ = ["run_staged_chief"]

log = logging.getLogger("tuner_job.chief")


def run_staged_chief(config: SearchConfig, shared_dir: Path, role: Role, fresh: bool = False) -> int:
    # The narrowing rules live with `tunectl narrow` (pure Python, no TensorFlow).
    from cluster.narrow import narrow_run

    assert config.stages is not None
    stages = parse_stages(config.stages)
    previous: str | None = None
    for index, stage in enumerate(stages, start=1):
        run = stage_run(config.run, index)
        next_run = stage_run(config.run, index + 1) if index < len(stages) else None
        if previous is None:
            stage_config = config.model_copy(update={"run": run, "tuner": stage.tuner, "max_trials": stage.max_trials, "stages": None})
        else:
            with tempfile.TemporaryDirectory(prefix="stage-") as tmp:
                result, narrowed = narrow_run(
                    shared_dir, previous, top_k=config.stage_top, out=Path(tmp) / "search.yaml",
                    new_run=run, tuner=stage.tuner, max_trials=stage.max_trials,
                )
            stage_config = narrowed.model_copy(update={"stages": None})
            changed = [row.name for row in result.rows if row.after != row.before]
            log.info("stage %d: space narrowed around the top %d trials of %s (%s)", index, len(result.top_ids), previous, ", ".join(changed) or "no change")
        log.info("stage %d of %d: run %s, %s, %d trials", index, len(stages), run, stage.tuner, stage.max_trials)
        from tuner_job.chief import run_chief

        run_chief(stage_config, RunPaths(shared_dir, run), role, fresh=fresh, next_run=next_run)
        previous = run
    return 0
