"""`tunectl` on Kubernetes: kind clusters, images, the Helm release, status and logs.

Every external tool is called through `cluster.kube.tools.run_tool`; the
`kubernetes` client is imported only by the commands that read the cluster.
"""

from cluster.kube.commands import register

__all__ = ["register"]
