"""The one identity of a remediation target: which ECS service, exactly.

An alarm can name the same service in several ways: `payments`, or its ARN
`arn:aws:ecs:us-east-1:123456789012:service/demo/payments`, with the cluster
as a name or an ARN, the region in the alarm or not. ECS accepts all of
them, so anything keyed on the text as received (policy matching, the
one-restart-per-Incident claim, cooldowns, hourly caps) could be walked
around with an alias. Everything that decides about a target uses the
`Target` that `resolve` makes instead: region, cluster and service as plain
ECS names, the same whichever way the alarm spelled them.

What cannot be resolved cannot be acted on: a name that is not an ECS name
(ECS allows letters, digits, `-` and `_`, up to 255), an ARN that does not
parse, an ARN and the alarm's own fields that disagree, no cluster at all,
or an alarm that names no service (`platform: none`). Such an Incident can
still be assessed, notified and escalated.

An alarm about a Kubernetes workload (`platform: kubernetes`) names a
Deployment and its namespace: a `Workload`, both names checked as the API
server would (DNS-1123). Each action acts on one kind of target; the phase
machine escalates an action whose kind is not the alarm's (`NoTarget`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..models import ServiceRef

ECS_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
# Kubernetes: a namespace is a DNS-1123 label, a Deployment a DNS-1123 subdomain.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")
ACCOUNT = re.compile(r"\d{12}")
# arn:PARTITION:ecs:REGION:ACCOUNT:KIND/PATH
_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:ecs:([^:]*):([^:]*):(service|cluster)/(.*)", re.DOTALL)


class UnresolvedTarget(ValueError):
    """The alarm names nothing this operator can act on; the message says why."""


@dataclass(frozen=True)
class Target:
    """An ECS service, named canonically.

    `str(target)` (region/cluster/service) is the key of its claims,
    cooldowns and caps. The account is not in it: the operator acts with
    its own credentials, in its own account; an ARN that names an account
    is checked against that account before anything is done (see ecs.py).
    """

    region: str
    cluster: str
    service: str
    account: str | None = None

    def __str__(self) -> str:
        return f"{self.region}/{self.cluster}/{self.service}"


@dataclass(frozen=True)
class Workload:
    """A Kubernetes Deployment in the operator's own cluster.

    `str(workload)` (kubernetes/namespace/name) keys its claims, cooldowns
    and caps, apart from every ECS target.
    """

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"kubernetes/{self.namespace}/{self.name}"


AnyTarget = Target | Workload


@dataclass(frozen=True)
class _Arn:
    region: str
    account: str
    path: list[str]


def _arn(text: str, kind: str) -> _Arn | None:
    """The parts of an ECS ARN of this kind; None if `text` is no ARN at all."""
    if not text.startswith("arn:"):
        return None
    match = _ARN.fullmatch(text)
    if match is None or match.group(3) != kind:
        raise UnresolvedTarget(f"{text!r} is not an ECS {kind} ARN")
    region, account, _, path = match.groups()
    if not REGION.fullmatch(region) or not ACCOUNT.fullmatch(account):
        raise UnresolvedTarget(f"{text!r} has no valid region and account")
    return _Arn(region=region, account=account, path=path.split("/"))


def _name(text: str, what: str) -> str:
    if not ECS_NAME.fullmatch(text):
        raise UnresolvedTarget(
            f"{what} {text!r} is not an ECS name (letters, digits, '-' and '_', up to 255)"
        )
    return text


def _agree(what: str, *values: str | None) -> str | None:
    """The one value the given ones agree on; UnresolvedTarget if they differ."""
    known = {value for value in values if value}
    if len(known) > 1:
        raise UnresolvedTarget(f"the alarm names {len(known)} different {what}s: {sorted(known)}")
    return known.pop() if known else None


def service_name(ref: ServiceRef) -> str:
    """The service's plain name (from its ARN if it is one), for policy matching.

    Total: a name that does not resolve is returned as it is, so that a
    policy can still match it (such an Incident is never acted on).
    """
    try:
        arn = _arn(ref.name, "service")
    except UnresolvedTarget:
        return ref.name
    return arn.path[-1] if arn is not None else ref.name


def resolve(ref: ServiceRef, *, default_cluster: str | None, default_region: str) -> AnyTarget:
    """The canonical target an alarm's service reference means; UnresolvedTarget if none."""
    if ref.platform == "kubernetes":
        return _workload(ref)
    if ref.platform != "ecs":
        raise UnresolvedTarget(
            f"the alarm names no service (service {ref.name!r} comes from the alarm itself)"
        )
    service_arn = _arn(ref.name, "service")
    cluster_arn = _arn(ref.cluster, "cluster") if ref.cluster else None
    if service_arn is not None:
        # New-style ARNs say the cluster (service/CLUSTER/NAME), old ones do not.
        if len(service_arn.path) not in (1, 2):
            raise UnresolvedTarget(f"{ref.name!r} is not an ECS service ARN")
        service = service_arn.path[-1]
        from_arn = service_arn.path[0] if len(service_arn.path) == 2 else None
    else:
        service, from_arn = ref.name, None
    if cluster_arn is not None and len(cluster_arn.path) != 1:
        raise UnresolvedTarget(f"{ref.cluster!r} is not an ECS cluster ARN")
    cluster = _agree(
        "cluster",
        from_arn,
        cluster_arn.path[0] if cluster_arn else ref.cluster,
    )
    region = _agree(
        "region",
        service_arn.region if service_arn else None,
        cluster_arn.region if cluster_arn else None,
        ref.region,
    )
    account = _agree(
        "account",
        service_arn.account if service_arn else None,
        cluster_arn.account if cluster_arn else None,
    )
    cluster = cluster or default_cluster
    if not cluster:
        raise UnresolvedTarget(
            f"no ECS cluster for service {service!r}: set the alarm's ClusterName "
            "(or cluster label) or ECS_CLUSTER_NAME"
        )
    region = region or default_region
    if not REGION.fullmatch(region):
        raise UnresolvedTarget(f"{region!r} is not an AWS region")
    return Target(
        region=region,
        cluster=_name(cluster, "cluster"),
        service=_name(service, "service"),
        account=account,
    )


def _workload(ref: ServiceRef) -> Workload:
    if not ref.namespace or not DNS_LABEL.fullmatch(ref.namespace):
        raise UnresolvedTarget(
            f"no valid namespace for Deployment {ref.name!r} (got {ref.namespace!r})"
        )
    if not DNS_SUBDOMAIN.fullmatch(ref.name):
        raise UnresolvedTarget(f"{ref.name!r} is not a Kubernetes Deployment name")
    return Workload(namespace=ref.namespace, name=ref.name)
