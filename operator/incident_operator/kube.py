"""A Kubernetes API client: in-cluster when there, else KUBECONFIG."""

from __future__ import annotations

from typing import Any

from kubernetes import client, config

from .models import GROUP, VERSION


def api_client(*, pool_size: int = 32) -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    # Every in-flight request holds a connection; the default (cores x 5)
    # would queue concurrent deliveries behind each other.
    configuration.connection_pool_maxsize = pool_size
    # Fix the proxy now, from the environment as it is. Left "from the
    # environment", the client re-reads every proxy variable on every request
    # (the token refresh hook re-assigns `host`, whose setter looks them up):
    # a tenth of the webhook's CPU time per alarm.
    configuration.proxy = configuration.proxy
    return client.ApiClient(configuration)


def read_incident(
    objects: client.CustomObjectsApi, namespace: str, name: str, **request: Any
) -> dict[str, Any] | None:
    """The Incident as the API server has it now, or None if it does not exist."""
    try:
        return objects.get_namespaced_custom_object(  # type: ignore[no-any-return]
            GROUP, VERSION, namespace, "incidents", name, **request
        )
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def patch_status_if_unchanged(
    objects: client.CustomObjectsApi,
    namespace: str,
    name: str,
    resource_version: str,
    status: dict[str, Any],
    **request: Any,
) -> dict[str, Any] | None:
    """Merge-patch an Incident's status, only if it is still at `resource_version`.

    The resourceVersion in a merge patch is a precondition: the API server
    refuses the write (409) if anyone wrote the object since it was read.
    Returns the new object, or None when it changed meanwhile.
    """
    patch = {"metadata": {"resourceVersion": resource_version}, "status": status}
    try:
        return objects.patch_namespaced_custom_object_status(  # type: ignore[no-any-return]
            GROUP, VERSION, namespace, "incidents", name, patch, **request
        )
    except client.ApiException as error:
        if error.status == 409:
            return None
        raise
