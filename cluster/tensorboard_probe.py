"""Who answers at a TensorBoard URL: a release's TensorBoard, another TensorBoard, another program, or nothing.

Asks TensorBoard's own HTTP API: `/data/environment` (JSON: its version,
`data_location` = the logdir, `window_title`) and `/data/runs` (the runs it
has loaded, `<run>/logs/trial_<id>/...` for ours). The chart starts each
release's TensorBoard with `--window_title` `contract.tensorboard_title(...)`,
which is how a release's TensorBoard is told from any other. Pure standard
library; loopback only in practice (the URL is the caller's).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field

__all__ = ["Answer", "probe"]


@dataclass
class Answer:
    """What answered at a URL.

    `answers`: anything did. `tensorboard`: it speaks TensorBoard's API.
    `title`, `logdir`, `version`: from `/data/environment`; `runs`: from
    `/data/runs`. `detail`: what answered instead, in words (HTTP status, server).
    """

    url: str
    answers: bool = False
    tensorboard: bool = False
    title: str = ""
    logdir: str = ""
    version: str = ""
    runs: list[str] = field(default_factory=list)
    detail: str = ""

    def is_release(self, title: str) -> bool:
        """Whether this is the TensorBoard the chart started with window title `title`."""
        return self.tensorboard and self.title == title

    def what(self) -> str:
        """What answered, for one line: `the TensorBoard of keras-tuner-cluster default/other (logdir /shared/runs)`."""
        if not self.answers:
            return f"nothing answers ({self.detail})" if self.detail else "nothing answers"
        if not self.tensorboard:
            return f"another program, not TensorBoard ({self.detail})"
        owner = f"TensorBoard {self.title!r}" if self.title else "a TensorBoard without a window title"
        return f"{owner} {self.version}, logdir {self.logdir}".replace("  ", " ")

    def trials_by_run(self) -> dict[str, int]:
        """`{run: trials with logs}` from the run names TensorBoard lists (`<run>/logs/trial_<id>[/...]`)."""
        found: dict[str, set[str]] = {}
        for name in self.runs:
            parts = name.split("/")
            if len(parts) >= 3 and parts[1] == "logs" and parts[2].startswith("trial_"):
                found.setdefault(parts[0], set()).add(parts[2])
        return {run: len(trials) for run, trials in sorted(found.items())}


def _get(url: str, timeout: float) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http on loopback)
            return response.status, dict(response.headers), response.read(1_000_000)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers or {}), b""


def probe(url: str, timeout: float = 3.0) -> Answer:
    """Ask `url` (e.g. `http://127.0.0.1:6006`) who it is; never raises for a network problem."""
    base = url.rstrip("/")
    answer = Answer(url=base)
    try:
        status, headers, body = _get(f"{base}/data/environment", timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        answer.detail = " ".join(str(reason).split())[:120]
        return answer
    answer.answers = True
    server = headers.get("Server") or headers.get("server") or "no Server header"
    try:
        environment = json.loads(body) if status == 200 else None
    except ValueError:
        environment = None
    if not isinstance(environment, dict) or "data_location" not in environment:
        answer.detail = f"HTTP {status} for /data/environment, server {server}"
        return answer
    answer.tensorboard = True
    answer.title = str(environment.get("window_title") or "")
    answer.logdir = str(environment.get("data_location") or "")
    answer.version = str(environment.get("version") or "")
    try:
        status, _, body = _get(f"{base}/data/runs", timeout)
        runs = json.loads(body) if status == 200 else []
        answer.runs = [str(r) for r in runs] if isinstance(runs, list) else []
    except (urllib.error.URLError, OSError, ValueError):
        pass
    return answer
