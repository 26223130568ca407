"""tunectl's conventions, driven as a user does (CliRunner): help in the style of kubectl and helm, every usage
error in one line in our words (exit 2), two-value options as `H W` or `H,W`, a path mistake without a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cluster.cli import app

runner = CliRunner()
PYTHON_TYPE = re.compile(r"<(bool|int|float|str|path|list\[[^\]]*\]|[a-z]+(,[a-z]+)+|[a-z ]+ range)>(\.\.\.)?")
NOISE = ("Input should be", "unable to parse", "Usage:", "Try '", "╭", "Traceback", "pydantic")


def _commands(command, path=()):  # noqa: ANN001, ANN202
    subs = getattr(command, "commands", None)
    if not subs:
        yield list(path)
        return
    yield list(path)
    for name, sub in subs.items():
        yield from _commands(sub, (*path, name))


ALL = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path", ALL, ids=[" ".join(p) or "tunectl" for p in ALL])
def test_help_names_what_to_pass_not_a_python_type(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "-h"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert not PYTHON_TYPE.search(result.output), PYTHON_TYPE.search(result.output).group(0)
    assert "--no-fresh" not in result.output and "╭" not in result.output
    for line in result.output.splitlines():
        option = re.match(r"\s+((-\w|--[\w-]+), )*(--[\w-]+)( [A-Z][A-Z_:,.=]*( [A-Z]+)*)?( / --[\w-]+)?(\s{2,}|$)", line)
        if line.strip().startswith("-"):
            assert option, f"not `-s, --long METAVAR  help`: {line!r}"


def test_help_lines_read_like_kubectl_and_helm() -> None:
    def help_of(*path: str) -> str:
        return runner.invoke(app, [*path, "--help"], terminal_width=120).output

    assert re.search(r"^\s+-f, --values FILE\s+Helm values file", help_of("deploy"), re.M)
    assert re.search(r"^\s+--size H W\s+Height and width", help_of("data", "synth"), re.M)
    assert "Usage: tunectl data push [OPTIONS] SOURCE\n" in help_of("data", "push")
    assert re.search(r"^\s+SOURCE\s+Image folder", help_of("data", "push"), re.M)
    assert re.search(r"^\s+--fresh\s+Delete this run's folder", help_of("local"), re.M)
    assert re.search(r"^\s+--run NAME\s+Run name; repeat", help_of("results"), re.M)
    root = help_of()
    assert "\nCommands:\n" in root and "\nKubernetes:\n" in root
    assert re.search(r"^\s+--version\s+Show the version", root, re.M)


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["local", "--workers", "abc"], "error: --workers: 'abc' is not a whole number (see 'tunectl local -h')"),
        (["local", "--workers", "0"], "error: --workers: must be at least 1, but got 0 (see 'tunectl local -h')"),
        (["local", "--workers"], "error: --workers needs a value: --workers N (see 'tunectl local -h')"),
        (["local", "--wrkers", "2"], "error: unknown option --wrkers (did you mean --fresh, --workers?) (see 'tunectl local -h')"),
        (["narrow"], "error: missing option --run NAME (see 'tunectl narrow -h')"),
        (["data", "push"], "error: missing argument SOURCE (see 'tunectl data push -h')"),
        (["data", "synth", "--out", "x", "--size", "600"], "error: --size takes 2 values: --size H W (see 'tunectl data synth -h')"),
        (["data", "synth", "--out", "x", "--size", "600", "tall"], "error: --size: 'tall' is not a whole number (see 'tunectl data synth -h')"),
        (["results", "--top", "ten"], "error: --top: 'ten' is not a whole number (see 'tunectl results -h')"),
        (["nope"], "error: no such command 'nope' (see 'tunectl -h')"),
        (["deploy", "--kind", "maybe"], "error: unexpected argument 'maybe' (see 'tunectl deploy -h')"),
    ],
)
def test_a_usage_error_is_one_line_in_our_words(argv: list[str], line: str) -> None:
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert result.stderr == line + "\n"
    assert result.stdout == "" and not any(noise in result.stderr for noise in NOISE)


@pytest.mark.parametrize("size", [["--size", "30,12"], ["--size=30,12"], ["--size", "30", "12"]])
def test_two_values_as_h_w_or_h_comma_w(tmp_path: Path, size: list[str]) -> None:
    from PIL import Image

    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "ds"), "--per-class", "2", *size])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "ds" / "lawbot" / "lawbot_0001.png") as image:
        assert image.size == (12, 30)  # width, height


def test_a_path_under_a_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    result = runner.invoke(app, ["data", "synth", "--out", str(blocker / "data" / "toonvision"), "--per-class", "2", "--size", "8", "8"])
    assert result.exit_code == 2
    assert result.stderr == f"error: --out {blocker}/data/toonvision: {blocker} is a file, not a folder; name a folder\n"
    assert "Traceback" not in result.output

    # Any command writing under a file says so in one line too (here: the plot of a real run's folder layout).
    from test_plot import write_stage

    write_stage(tmp_path / "shared", "wide", 6, narrow=False, seed=1)
    result = runner.invoke(app, ["results", "--shared-dir", str(tmp_path / "shared"), "--plot", str(blocker / "plots" / "p.png")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [f"error: {blocker}/plots: not a directory ({blocker} is a file, not a folder)"]


def test_no_args_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage: tunectl [OPTIONS] COMMAND [ARGS]..." in result.output and "error:" not in result.output
