"""Reading a cluster through the `kubernetes` client: the release's Jobs, pods, logs, claims and events.

One `Cluster` per command, bound to a kubeconfig context and a namespace
(`connect`). Every call fails fast and quietly: no urllib3 retries (each
logs a warning and triples the wait on a dead server), a timeout on each
request, and any error turned into one `LauncherError` line.

The client is imported inside the functions: it takes a quarter of a second
to load, and `tunectl --help` must not pay for it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from cluster.errors import BadInputError, LauncherError
from cluster.kube.release import selector
from cluster.kube.status import newest_pod

__all__ = ["Cluster", "ReleaseRecord", "connect", "kubeconfig_path", "quiet_logging", "unreachable_reason"]

_TIMEOUT = (5, 30)  # connect, read (seconds)


def kubeconfig_path() -> str:
    """KUBECONFIG (one or more paths) or ~/.kube/config, read now: the client reads it once at import."""
    return os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")


@contextmanager
def quiet_logging() -> Iterator[list[str]]:
    """Collect what the client and urllib3 log meanwhile, instead of letting it reach stderr."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    root = logging.getLogger()
    handler = Collect(logging.WARNING)
    saved = root.handlers[:]
    root.handlers = [handler]
    try:
        yield records
    finally:
        root.handlers = saved


def unreachable_reason(exc: BaseException) -> str:
    """A few words for why a request got no answer: `connection refused`, `timed out`..."""
    text = " ".join(str(exc).split())
    for pattern, words in (
        (r"Connection refused", "connection refused"),
        (r"timed out|Timeout", "no answer within 5 s"),
        (r"Name or service not known|nodename nor servname|Failed to resolve|NameResolution", "its name does not resolve"),
        (r"CERTIFICATE_VERIFY_FAILED|SSLError|SSL", "TLS handshake failed"),
        (r"Connection reset|RemoteDisconnected|Connection aborted", "the connection was closed"),
        (r"No route to host|Network is unreachable", "no route to it"),
    ):
        if re.search(pattern, text):
            return words
    return text[:120]


@dataclass(frozen=True)
class ReleaseRecord:
    """A Helm release as Helm stores it: a Secret labelled owner=helm, name, version, status."""

    name: str
    revision: int
    status: str


@dataclass
class Cluster:
    """The APIs a search needs, bound to one context and namespace."""

    core: Any
    batch: Any
    namespace: str
    context: str = ""
    server: str = ""
    api_client: Any = None

    # ----- plumbing ----------------------------------------------------------

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        kwargs.setdefault("_request_timeout", _TIMEOUT)
        try:
            with quiet_logging():
                return method(*args, **kwargs)
        except ApiException as exc:
            raise LauncherError(f"Kubernetes API ({self.context or 'cluster'}): {exc.status} {exc.reason}") from None
        except (HTTPError, OSError) as exc:
            raise LauncherError(
                f"cannot reach the Kubernetes API server {self.server} of context {self.context!r}: {unreachable_reason(exc)}"
            ) from None

    # ----- the server ----------------------------------------------------------

    def version(self) -> str:
        """The server's `gitVersion`; raises the client's own errors (the pre-flight words them)."""
        from kubernetes import client

        with quiet_logging():
            info = client.VersionApi(self.api_client).get_code(_request_timeout=(5, 10))
        return info.git_version

    # ----- the release ---------------------------------------------------------

    def helm_releases(self, name: str | None = None) -> list[ReleaseRecord]:
        """Helm's records in this namespace (newest revision of each); [] when none.

        Raises the client's ApiException (403 where Secrets may not be listed).
        """
        labels = "owner=helm" + (f",name={name}" if name else "")
        with quiet_logging():
            found = self.core.list_namespaced_secret(self.namespace, label_selector=labels, _request_timeout=_TIMEOUT).items
        newest: dict[str, ReleaseRecord] = {}
        for secret in found:
            meta = secret.metadata.labels or {}
            try:
                record = ReleaseRecord(meta["name"], int(meta.get("version", "0")), meta.get("status", "unknown"))
            except (KeyError, ValueError):
                continue
            if record.status != "uninstalled" and (record.name not in newest or record.revision > newest[record.name].revision):
                newest[record.name] = record
        return sorted(newest.values(), key=lambda r: r.name)

    def jobs(self, release: str) -> list[Any]:
        return self._call(self.batch.list_namespaced_job, self.namespace, label_selector=selector(release)).items

    def pods(self, release: str, component: str | None = None, index: int | None = None) -> list[Any]:
        return self.pods_by(selector(release, component, index))

    def pods_by(self, label_selector: str) -> list[Any]:
        return self._call(self.core.list_namespaced_pod, self.namespace, label_selector=label_selector).items

    def pod_for(self, release: str, component: str, index: int | None = None) -> Any:
        pod = newest_pod(self.pods(release, component, index))
        if pod is None:
            who = f"worker {index}" if component == "worker" else component
            raise LauncherError(
                f"no {who} pod for release {release!r} in namespace {self.namespace!r}; "
                "is the search deployed (`tunectl status`)?"
            )
        return pod

    def services(self, release: str, component: str | None = None) -> list[Any]:
        return self._call(self.core.list_namespaced_service, self.namespace, label_selector=selector(release, component)).items

    def claim(self, name: str) -> Any | None:
        """The PersistentVolumeClaim `name`, or None when there is none."""
        from kubernetes.client.exceptions import ApiException

        try:
            with quiet_logging():
                return self.core.read_namespaced_persistent_volume_claim(name, self.namespace, _request_timeout=_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise LauncherError(f"Kubernetes API ({self.context}): {exc.status} {exc.reason}") from None

    def warnings_for(self, kind: str, name: str) -> list[Any]:
        """The Warning events of one object, oldest first."""
        fields = f"involvedObject.kind={kind},involvedObject.name={name}"
        events = self._call(self.core.list_namespaced_event, self.namespace, field_selector=fields).items
        warnings = [e for e in events if e.type == "Warning"]
        return sorted(warnings, key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp or ""))

    def log_tail(self, pod: str, lines: int = 20) -> str:
        """The last lines of a pod's log ('' when it has none yet)."""
        from kubernetes.client.exceptions import ApiException

        try:
            with quiet_logging():
                return self.core.read_namespaced_pod_log(pod, self.namespace, tail_lines=lines, _request_timeout=_TIMEOUT) or ""
        except ApiException:
            return ""

    def write_logs(self, pod: str, follow: bool, tail: int | None, out: BinaryIO | None = None) -> None:
        """Copy the pod's log to `out` (stdout), following it while the pod runs."""
        out = out or sys.stdout.buffer
        kwargs: dict[str, Any] = {"follow": follow, "_preload_content": False}
        if tail is not None:
            kwargs["tail_lines"] = tail
        if follow:
            kwargs["_request_timeout"] = (5, None)  # a quiet pod is not a dead server
        response = self._call(self.core.read_namespaced_pod_log, pod, self.namespace, **kwargs)
        try:
            for chunk in response.stream(amt=4096, decode_content=True):
                out.write(chunk)
                out.flush()
        except KeyboardInterrupt:
            pass
        finally:
            response.release_conn()

    # ----- cluster-wide ----------------------------------------------------------

    def nodes(self) -> list[Any]:
        return self._call(self.core.list_node).items

    def storage_classes(self) -> list[Any]:
        from kubernetes import client

        return self._call(client.StorageV1Api(self.api_client).list_storage_class).items

    def runtime_classes(self) -> list[Any]:
        from kubernetes import client

        return self._call(client.NodeV1Api(self.api_client).list_runtime_class).items


def connect(namespace: str, context: str, server: str = "") -> Cluster:
    """Bind the APIs to `context` of the kubeconfig (or the pod's service account) and `namespace`.

    Raises BadInputError (exit 2) when the kubeconfig cannot be loaded for that context.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    with quiet_logging() as logged:
        try:
            if context == "in-cluster":
                config.load_incluster_config(client_configuration=configuration)
            else:
                config.load_kube_config(
                    config_file=kubeconfig_path(), context=context, client_configuration=configuration, persist_config=False
                )
        except (ConfigException, OSError, TypeError, ValueError) as exc:
            detail = " ".join((str(exc) or "; ".join(logged)).split())[:200]
            raise BadInputError(f"cannot use kubeconfig context {context!r}: {detail}") from None
    configuration.retries = False  # one attempt: the pre-flight says what is wrong, at once
    api = client.ApiClient(configuration)
    return Cluster(
        core=client.CoreV1Api(api),
        batch=client.BatchV1Api(api),
        namespace=namespace,
        context=context,
        server=server or configuration.host,
        api_client=api,
    )
