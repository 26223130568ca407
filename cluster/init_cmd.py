"""`tunectl init`: write a commented `search.yaml` to start from, and the note `local` gives without one.

Every key of `SearchConfig` is in the file: the everyday ones set, the
others commented out at their defaults, each with a line saying what it does,
so that the file is the config's documentation too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cluster.errors import BadInputError, user_errors
from tuner_job.config import SearchConfig, parse_config
from tuner_job.layout import atomic_write_text
from tuner_job.progress import counted

__all__ = ["KEYS", "init_command", "defaults_note", "search_yaml"]

#: (key, what it does, written uncommented). Every field of SearchConfig, in the order the file shows them.
KEYS: list[tuple[str, str, bool]] = [
    ("run", "name of the run: its folder under <shared>/runs/ (a run that exists resumes)", True),
    ("data", "image folder <class>/*.png|jpg|jpeg|gif|bmp (class subfolders too), relative to the shared folder", True),
    ("image_size", "height, width the images are resized to (the article: [600, 200])", True),
    ("validation_split", "seeded, stratified split", True),
    ("hypermodel", '"toonvision", "toonvision_extended", or "package.module:name" / "path/file.py:name": a build function or a HyperModel', True),
    ("space", "narrow the hypermodel's space, e.g. {conv_1_filters: {min: 8, max: 12}, conv_1_kernel_size: {values: [3]}}", True),
    ("tuner", "random | hyperband | bayesian | grid | asha", True),
    ("objective", "metric to optimise; losses and errors go down, accuracy, AUC, precision, recall up", True),
    ("objective_direction", "min | max: needed only for a metric whose direction its name does not tell", False),
    ("max_trials", "trials in the search", True),
    ("executions_per_trial", "trainings per trial, averaged", True),
    ("epochs", "epochs per trial (Hyperband's max_epochs, asha's top rung)", True),
    ("batch_size", "images per batch (a hypermodel's own batch_size hyperparameter wins)", True),
    ("seed", "seeds the split and the oracle", True),
    ("early_stopping_patience", "stop a trial after this many epochs without improvement", False),
    ("hyperband_factor", "reduction factor of hyperband and asha: the top 1/factor of a rung goes on", False),
    ("asha_min_epochs", "asha: epochs of the lowest rung (at most epochs)", False),
    ("asha_max_total_epochs", "asha: an epoch budget over all trials, as well as max_trials configurations", False),
    ("bayesian_initial_points", "random trials before the Gaussian process leads (default: 3 per hyperparameter)", False),
    ("bayesian_liar", "bayesian: what a running trial is taken to score (believer | worst | mean | best; off: KerasTuner's own)", False),
    ("max_consecutive_failed_trials", "this many failures in a row end the search (every process exits 1)", False),
    ("max_retries_per_trial", "re-runs of a trial that raised", False),
    ("lease_seconds", "a trial whose worker is silent this long goes to another worker", False),
    ("chief_lease_seconds", "one chief per run: a second chief waits this long for a live one, then exits 2", False),
    ("chief_wait_seconds", "how long a worker waits for an absent chief", False),
    ("data_wait_seconds", "how long the chief waits for a data folder pushed after the deploy", False),
    ("warm_start", "an earlier run whose trials inside this space seed the oracle (tunectl narrow sets it)", False),
    ("stages", "a staged search in one chief, e.g. random:60,bayesian:40 (runs <run>-s1, <run>-s2)", False),
    ("stage_top", "each stage narrows around this many of the previous stage's best trials", False),
]

_EXAMPLES = {"objective_direction": "max", "early_stopping_patience": 3, "bayesian_initial_points": 10, "warm_start": "toonvision",
             "stages": "random:60,bayesian:40", "asha_max_total_epochs": 300}  # fmt: skip


def _value(value: Any) -> str:
    """A value as YAML flow text (JSON is valid YAML): [600, 200], "toonvision", 0.2, {}."""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, str):
        return value if value and value.replace("_", "").replace("-", "").replace("/", "").replace(".", "").isalnum() else json.dumps(value)
    return json.dumps(value)


def search_yaml(config: SearchConfig) -> str:
    """The commented `search.yaml` of `config` (every key; the optional ones commented out)."""
    data = config.model_dump(mode="python")
    width = max(len(key) for key, _, _ in KEYS) + 2 + 16
    lines = [
        "# A search for keras-tuner-cluster: `tunectl local --config search.yaml` runs it on this machine,",
        "# the chart's `search:` value on Kubernetes. Unknown keys and wrong types are errors that name the key.",
        "# Commented keys show their default (or an example); uncomment to change them.",
        "",
    ]
    for key, text, active in KEYS:
        value = data[key]
        if active or value is not None and value != SearchConfig.model_fields[key].default:
            line = f"{key}: {_value(value)}"
        else:
            line = f"# {key}: {_value(_EXAMPLES.get(key, value))}"
        lines.append(f"{line:<{width}} # {text}" if len(line) < width else f"{line}  # {text}")
    return "\n".join(lines) + "\n"


def defaults_note(config: SearchConfig) -> str:
    """What `tunectl local` says when it runs without a config: which defaults, and what they cost."""
    height, width = config.image_size
    note = (
        f"no --config and no ./search.yaml: using the built-in defaults: run {config.run}, data {config.data}, "
        f"{height}x{width} images, {config.tuner} search of {counted(config.max_trials, 'trial')} x {counted(config.epochs, 'epoch')}"
    )
    if config.max_trials >= 100 and config.image_size == SearchConfig.model_fields["image_size"].default:
        note += " (the article's full search: hours on a CPU; --max-trials and --epochs shorten it)"
    return note + ". `tunectl init` writes a commented search.yaml to start from."


def init_command(
    out: Annotated[Path, typer.Argument(metavar="FILE", help="Where to write it.")] = Path("search.yaml"),
    run: Annotated[str | None, typer.Option("--run", metavar="NAME", help="Name of the run (default toonvision).")] = None,
    data: Annotated[
        str | None, typer.Option("--data", metavar="DIR", help="Image folder inside the shared folder (default data/toonvision).")
    ] = None,
    image_size: Annotated[
        tuple[int, int] | None, typer.Option("--image-size", metavar="H W", help="Height and width the images are resized to (default 600 200).")
    ] = None,
    tuner: Annotated[str | None, typer.Option("--tuner", metavar="NAME", help="random | hyperband | bayesian | grid | asha, default random.")] = None,
    max_trials: Annotated[int | None, typer.Option("--max-trials", metavar="N", help="Trials in the search (default 100).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", metavar="N", help="Epochs per trial (default 10).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE if it exists.")] = False,
) -> None:
    """Write a commented search.yaml (every key, with what it does) to start a search from."""
    with user_errors():
        given = {"run": run, "data": data, "image_size": image_size, "tuner": tuner, "max_trials": max_trials, "epochs": epochs}
        config = parse_config({k: v for k, v in given.items() if v is not None}, "tunectl init")
        if out.exists() and not force:
            raise BadInputError(f"{out} exists; pass --force to overwrite it")
        atomic_write_text(out, search_yaml(config))
        typer.echo(f"wrote {out}: edit it, then `tunectl local --config {out}`")
