"""A fake Kubernetes API server on 127.0.0.1, for the launcher's tests (no real one runs here).

It serves what `tunectl` reads through the real `kubernetes` client: lists
of namespaced and cluster objects filtered by label and field selectors,
pod logs and `/version`; it records every request (method, path, query) so
that a test checks what was asked. Objects are plain JSON dicts, as the API
server returns them. A kubeconfig pointing at it is written next to it.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

__all__ = ["FakeApiServer", "write_kubeconfig"]

# plural -> (group/version path, namespaced)
RESOURCES = {
    "pods": ("api/v1", True),
    "secrets": ("api/v1", True),
    "persistentvolumeclaims": ("api/v1", True),
    "events": ("api/v1", True),
    "services": ("api/v1", True),
    "jobs": ("apis/batch/v1", True),
    "nodes": ("api/v1", False),
    "storageclasses": ("apis/storage.k8s.io/v1", False),
    "runtimeclasses": ("apis/node.k8s.io/v1", False),
}
KINDS = {
    "Pod": "pods", "Secret": "secrets", "PersistentVolumeClaim": "persistentvolumeclaims", "Event": "events",
    "Service": "services", "Job": "jobs", "Node": "nodes", "StorageClass": "storageclasses", "RuntimeClass": "runtimeclasses",
}  # fmt: skip


def _matches_labels(obj: dict[str, Any], selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _field(obj: dict[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _matches_fields(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if str(_field(obj, key)) != value:
            return False
    return True


class FakeApiServer:
    """`add(obj)` an object; `fail(plural, status)` makes its lists answer an error; `requests` records calls."""

    def __init__(self, version: str = "v1.33.1") -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {plural: [] for plural in RESOURCES}
        self.logs: dict[tuple[str, str], str] = {}
        self.failures: dict[str, int] = {}
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.version = version
        self._after_list: dict[str, tuple[int, Any]] = {}
        self._lists: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, *objs: dict[str, Any]) -> None:
        with self._lock:
            for obj in objs:
                self.objects[KINDS[obj["kind"]]].append(obj)

    def replace(self, kind: str, *objs: dict[str, Any]) -> None:
        with self._lock:
            self.objects[KINDS[kind]] = list(objs)

    def set_log(self, namespace: str, pod: str, text: str) -> None:
        self.logs[(namespace, pod)] = text

    def fail(self, plural: str, status: int) -> None:
        self.failures[plural] = status

    def after_list(self, plural: str, count: int, action: Any) -> None:
        """Run `action()` once `count` lists of `plural` have been answered (a change the client must poll for)."""
        self._after_list[plural] = (count, action)

    def _listed(self, plural: str) -> None:
        self._lists[plural] = self._lists.get(plural, 0) + 1
        count, action = self._after_list.get(plural, (0, None))
        if action is not None and self._lists[plural] == count:
            action()

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]

    def _list(self, plural: str, namespace: str | None, query: dict[str, list[str]]) -> dict[str, Any]:
        labels = (query.get("labelSelector") or [""])[0]
        fields = (query.get("fieldSelector") or [""])[0]
        with self._lock:
            items = [
                o for o in self.objects[plural]
                if (namespace is None or o["metadata"].get("namespace", "default") == namespace)
                and _matches_labels(o, labels) and _matches_fields(o, fields)
            ]  # fmt: skip
        return {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        namespaced = re.compile(r"^/(api/v1|apis/[^/]+/[^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+)(?:/(log))?)?$")
        cluster = re.compile(r"^/(api/v1|apis/[^/]+/[^/]+)/([^/]+)$")

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code})

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                url = url._replace(path=url.path.rstrip("/") or "/")
                query = parse_qs(url.query)
                server.requests.append(("GET", url.path, query))
                if url.path == "/version" and "version" in server.failures:
                    self._status(server.failures["version"], "Unauthorized")
                    return
                if url.path == "/version":
                    major, minor = server.version.lstrip("v").split(".")[:2]
                    self._send(200, {
                        "major": major, "minor": minor, "gitVersion": server.version, "gitCommit": "0" * 40,
                        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24",
                        "compiler": "gc", "platform": "linux/amd64",
                    })  # fmt: skip
                    return
                match = namespaced.match(url.path)
                if match:
                    _, ns, plural, name, log = match.groups()
                    if plural in server.failures:
                        self._status(server.failures[plural], "Forbidden")
                    elif log:
                        text = server.logs.get((ns, name))
                        self._send(200, text, "text/plain") if text is not None else self._status(404, "NotFound")
                    elif name:
                        found = [o for o in server._list(plural, ns, {})["items"] if o["metadata"]["name"] == name]
                        self._send(200, found[0]) if found else self._status(404, "NotFound")
                    else:
                        self._send(200, server._list(plural, ns, query))
                        server._listed(plural)
                    return
                match = cluster.match(url.path)
                if match and match.group(2) in RESOURCES:
                    plural = match.group(2)
                    if plural in server.failures:
                        self._status(server.failures[plural], "Forbidden")
                    else:
                        self._send(200, server._list(plural, None, query))
                    return
                self._status(404, "NotFound")

        return Handler


def write_kubeconfig(path: Path, servers: dict[str, str], current: str | None) -> Path:
    """A kubeconfig with one context per `{name: server URL}`, `current` selected."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}} for name, url in servers.items()],
        "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "tester"}} for name in servers],
        "preferences": {},
    }
    if current is not None:
        config["current-context"] = current
    path.write_text(yaml.safe_dump(config))
    return path
