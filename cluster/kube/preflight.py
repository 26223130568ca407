"""One pre-flight for every Kubernetes verb: which cluster, does it answer, is the release there.

deploy, scale, undeploy, status, logs, tensorboard, data push and verify call
`preflight()` before anything else. It

1. picks the kubeconfig context: `--context` (or TUNECTL_CONTEXT), else the
   current one; an unknown name is refused (exit 2) with the contexts that exist;
2. reads that context's API server and asks it for its version (one request,
   5 s, no retries);
3. looks the Helm release up (Helm's own records, Secrets labelled
   `owner=helm`; the release's Jobs where Secrets may not be read);

and prints one line on stderr saying what it found, or stops the verb with one
line that says what to do next (`tunectl up`, `kubectl config use-context
...`, `tunectl deploy`). kubectl and helm run only after it, with the context
it resolved (`--context` / `--kube-context`), so none of their connection
errors, nor urllib3's, reach the user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import typer
import yaml

from cluster.errors import BadInputError, LauncherError
from cluster.kube.k8s import Cluster, ReleaseRecord, connect, kubeconfig_path, unreachable_reason

__all__ = ["Preflight", "kube_contexts", "preflight", "resolve_context"]


@dataclass
class Preflight:
    """What the pre-flight found: the context, its server, and the release (None: not installed)."""

    context: str
    server: str
    namespace: str
    release_name: str
    version: str
    release: ReleaseRecord | None
    cluster: Cluster
    other_releases: list[str] = field(default_factory=list)

    def require_release(self) -> None:
        """Stop the verb, with `tunectl deploy` as the next step, when the release is not installed."""
        if self.release is None:
            elsewhere = f" (releases there: {', '.join(self.other_releases)})" if self.other_releases else ""
            raise LauncherError(
                f"no release {self.release_name!r} in namespace {self.namespace!r} of context {self.context!r}{elsewhere}; "
                "`tunectl deploy` installs it"
            )

    def kube_args(self, flag: str = "--context") -> list[str]:
        """The flag that pins kubectl (`--context`) or helm (`--kube-context`) to this context."""
        return [] if self.context == "in-cluster" else [flag, self.context]


def kube_contexts() -> tuple[dict[str, dict[str, Any]], str | None]:
    """The kubeconfig's contexts `{name: {"cluster": ..., "server": ...}}` and the current one.

    Merges the files of KUBECONFIG as kubectl does: the first file that names
    a context, a cluster or the current context wins.

    Raises:
        BadInputError: (exit 2) no kubeconfig file exists where KUBECONFIG or
            ~/.kube/config says (the line names each path looked at), or one
            cannot be read or is not a kubeconfig.
    """
    paths = [p for p in kubeconfig_path().split(os.pathsep) if p]
    contexts: dict[str, dict[str, Any]] = {}
    servers: dict[str, str] = {}
    current: str | None = None
    read = []
    for path in paths:
        try:
            with open(os.path.expanduser(path)) as handle:
                config = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            continue
        except (OSError, yaml.YAMLError) as exc:
            reason = " ".join(str(exc).split())[:160]
            raise BadInputError(f"cannot read the kubeconfig {path}: {reason}") from None
        if not isinstance(config, dict):
            raise BadInputError(f"cannot read the kubeconfig {path}: not a kubeconfig")
        read.append(path)
        for entry in config.get("clusters") or []:
            servers.setdefault(entry.get("name", ""), (entry.get("cluster") or {}).get("server", ""))
        for entry in config.get("contexts") or []:
            contexts.setdefault(entry.get("name", ""), {"cluster": (entry.get("context") or {}).get("cluster", "")})
        current = current or config.get("current-context") or None
    if not read:
        raise BadInputError(_no_kubeconfig([os.path.expanduser(p) for p in paths]))
    for entry in contexts.values():
        entry["server"] = servers.get(entry["cluster"], "")
    return contexts, current


def _no_kubeconfig(looked_at: list[str]) -> str:
    """The one line for a missing kubeconfig: what to set, and every path looked at."""
    where = ", ".join(looked_at) or "nothing"
    if os.environ.get("KUBECONFIG"):
        what = "KUBECONFIG names no file that exists"
    else:
        what = "set KUBECONFIG or create ~/.kube/config"
    return f"no Kubernetes config: {what} (looked at {where}); `tunectl up` creates a local kind cluster and its context"


def _names(contexts: dict[str, Any]) -> str:
    return ", ".join(sorted(contexts)) or "none"


def resolve_context(context: str | None) -> tuple[str, str]:
    """(context name, API server URL) for `context`, or the current context when None.

    Raises BadInputError (exit 2) naming an unknown context with the ones that exist.
    """
    if context is None and os.environ.get("KUBERNETES_SERVICE_HOST") and not os.path.exists(kubeconfig_path()):
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        return "in-cluster", f"https://{host}:{port}"
    contexts, current = kube_contexts()
    if not contexts:
        raise BadInputError(f"the kubeconfig ({kubeconfig_path()}) has no contexts; `tunectl up` creates a local kind cluster and its context")
    name = context or current
    if name is None:
        raise BadInputError(
            f"the kubeconfig has no current context; pick one with --context NAME or `kubectl config use-context NAME` "
            f"(contexts: {_names(contexts)})"
        )
    if name not in contexts:
        raise BadInputError(
            f"kubeconfig context {name!r} not found; contexts: {_names(contexts)} "
            "(pick one with --context NAME or `kubectl config use-context NAME`)"
        )
    return name, contexts[name]["server"]


def _unreachable(context: str, server: str, exc: BaseException) -> LauncherError:
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return LauncherError(
            f"the Kubernetes API server {server} of context {context!r} refused its credentials ({status}); "
            "renew them (e.g. your cloud CLI's get-credentials) or pick another context"
        )
    if status is not None:
        return LauncherError(f"the Kubernetes API server {server} of context {context!r} answered {status} {getattr(exc, 'reason', '')}".strip())
    reason = unreachable_reason(exc)
    if context.startswith("kind-"):
        name = context.removeprefix("kind-")
        step = f"is the kind cluster running? `tunectl up --name {name}` creates it, `docker start {name}-control-plane` starts a stopped one"
    else:
        step = "check the cluster, your network or VPN, or pick another context with --context NAME or `kubectl config use-context NAME`"
    return LauncherError(f"cannot reach the Kubernetes API server {server} of context {context!r} ({reason}); {step}")


def _find_release(cluster: Cluster, name: str) -> tuple[ReleaseRecord | None, list[str]]:
    """(the release, the other releases in the namespace); by the release's Jobs where Secrets are forbidden."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        records = cluster.helm_releases()
    except ApiException as exc:
        if exc.status != 403:
            raise LauncherError(f"Kubernetes API ({cluster.context}): {exc.status} {exc.reason}") from None
        jobs = cluster.jobs(name)
        return (ReleaseRecord(name, 0, "unknown") if jobs else None), []
    except (HTTPError, OSError) as exc:
        raise _unreachable(cluster.context, cluster.server, exc) from None
    found = next((r for r in records if r.name == name), None)
    return found, [r.name for r in records if r.name != name]


def preflight(release: str, namespace: str, context: str | None, *, need_release: bool, quiet: bool = False) -> Preflight:
    """Check the cluster and the release before a verb acts; see the module docstring.

    `need_release`: the verb acts on an installed release (status, logs,
    undeploy...); its absence stops it with `tunectl deploy` as the next step.
    Raises LauncherError (BadInputError for an unknown context) with one line.
    """
    name, server = resolve_context(context)
    cluster = connect(namespace, name, server)
    server = server or cluster.server
    try:
        version = cluster.version()
    except Exception as exc:  # urllib3, ssl, socket or API errors: all mean "no usable answer"
        raise _unreachable(name, server, exc) from None
    record, others = _find_release(cluster, release)
    found = Preflight(name, server, namespace, release, version, record, cluster, others)
    if need_release:
        found.require_release()
    if not quiet:
        state = f"{record.status} (revision {record.revision})" if record and record.revision else ("found" if record else "not installed")
        typer.echo(f"cluster: context {name} at {server} (Kubernetes {version}); release {release!r} in namespace {namespace!r}: {state}", err=True)
    return found
