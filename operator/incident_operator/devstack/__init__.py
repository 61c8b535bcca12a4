"""The local development stack: a real control plane, moto, and the fakes."""
