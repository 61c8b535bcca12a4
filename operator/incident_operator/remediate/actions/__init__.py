"""The action plugins: one module each, found by `registry.py`.

Adding an action is adding a module here with one `plugin.Action`
subclass, plus its tests and a README paragraph.
"""
