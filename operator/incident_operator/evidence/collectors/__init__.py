"""The evidence collectors, one module each (see ../collector.py)."""
