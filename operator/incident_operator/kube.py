"""A Kubernetes API client: in-cluster when there, else KUBECONFIG."""

from __future__ import annotations

from kubernetes import client, config


def api_client(*, pool_size: int = 32) -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    # Every in-flight request holds a connection; the default (cores x 5)
    # would queue concurrent deliveries behind each other.
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)
