"""Reading a running search through the `kubernetes` client: its Jobs, pods and logs.

The client is imported inside the functions: it takes a quarter of a second to
load, and `tunectl --help` must not pay for it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, BinaryIO

from cluster.errors import LauncherError
from cluster.kube.release import selector
from cluster.kube.status import newest_pod

__all__ = ["Cluster", "connect"]


@dataclass
class Cluster:
    """The two APIs a search needs, bound to one namespace."""

    core: Any
    batch: Any
    namespace: str

    def jobs(self, release: str) -> list[Any]:
        return self._call(self.batch.list_namespaced_job, self.namespace, label_selector=selector(release)).items

    def pods(self, release: str, component: str | None = None, index: int | None = None) -> list[Any]:
        found = self._call(
            self.core.list_namespaced_pod, self.namespace, label_selector=selector(release, component, index)
        )
        return found.items

    def pod_for(self, release: str, component: str, index: int | None = None) -> Any:
        pod = newest_pod(self.pods(release, component, index))
        if pod is None:
            who = f"worker {index}" if component == "worker" else component
            raise LauncherError(
                f"no {who} pod for release {release!r} in namespace {self.namespace!r}; "
                "is the search deployed (`tunectl status`)?"
            )
        return pod

    def write_logs(self, pod: str, follow: bool, tail: int | None, out: BinaryIO | None = None) -> None:
        """Copy the pod's log to `out` (stdout), following it while the pod runs."""
        out = out or sys.stdout.buffer
        kwargs: dict[str, Any] = {"follow": follow, "_preload_content": False}
        if tail is not None:
            kwargs["tail_lines"] = tail
        response = self._call(self.core.read_namespaced_pod_log, pod, self.namespace, **kwargs)
        try:
            for chunk in response.stream(amt=4096, decode_content=True):
                out.write(chunk)
                out.flush()
        except KeyboardInterrupt:
            pass
        finally:
            response.release_conn()

    @staticmethod
    def _call(method: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(*args, **kwargs)
        except ApiException as exc:
            raise LauncherError(f"Kubernetes API: {exc.status} {exc.reason}") from None
        except HTTPError as exc:
            raise LauncherError(f"cannot reach the Kubernetes API server: {exc}") from None


def connect(namespace: str, context: str | None = None) -> Cluster:
    """Load kubeconfig (or the in-cluster service account) and bind the APIs to `namespace`."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_kube_config(context=context)
    except (ConfigException, OSError, TypeError) as kube_error:
        try:
            config.load_incluster_config()
        except ConfigException:
            raise LauncherError(
                f"no Kubernetes config ({kube_error}); run `tunectl up` or set KUBECONFIG"
            ) from None
    return Cluster(core=client.CoreV1Api(), batch=client.BatchV1Api(), namespace=namespace)
