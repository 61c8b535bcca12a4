"""Reconciliation: the phase machine (`phases.py`) and the kopf handlers that drive it."""
