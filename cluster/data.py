"""`tunectl data`: datasets on the shared volume."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cluster.errors import BadInputError, path_problem, user_errors

__all__ = ["data_app"]

data_app = typer.Typer(no_args_is_help=True, help="Datasets: synthesize one, or push one to the cluster.")


@data_app.command("synth")
def synth(
    out: Annotated[Path, typer.Option(metavar="DIR", help="Folder to write <class>/*.png into.")],
    per_class: Annotated[int, typer.Option(min=2, metavar="N", help="Images per class.")] = 40,
    size: Annotated[tuple[int, int], typer.Option(metavar="H W", help="Height and width in pixels (also H,W).")] = (600, 200),
    seed: Annotated[int, typer.Option(metavar="N", help="Random seed.")] = 42,
) -> None:
    """Write a ToonVision-like 4-class image folder (bossbot, lawbot, cashbot, sellbot)."""
    from cluster.synth import synthesize

    with user_errors():
        if min(size) < 8:
            raise BadInputError(f"--size must be at least 8x8 pixels, but got {size[0]}x{size[1]}")
        problem = path_problem(out)
        if problem:
            raise BadInputError(f"--out {out}: {problem}; name a folder")
        counts = synthesize(out, per_class=per_class, size=size, seed=seed)
        typer.echo(f"wrote {sum(counts.values())} images ({per_class} per class, {size[0]}x{size[1]}) to {out}")
