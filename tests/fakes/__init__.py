"""Fake servers for third-party APIs: real clients talk HTTP to them on loopback."""
