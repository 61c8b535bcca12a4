"""Automated, auditable incident response on Kubernetes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("incident-operator")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
