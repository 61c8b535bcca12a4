"""Automated, auditable incident response on Kubernetes."""
