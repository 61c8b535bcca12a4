"""Untrusted text made safe to use as a name, or to show to people.

Alarm text comes from outside. Some characters make text read as something
it is not: control characters (a `\\0` in a service name reached ECS), and
format characters such as the bidi overrides U+202E/U+202C (which made
`kubectl get` show a cluster called `dorp-tsae` as `east-prod`) or
zero-width spaces. Names lose them (`visible`); free text keeps them, and
is shown with them spelled out where a person reads it (`reveal`).
"""

from __future__ import annotations

import unicodedata

# Control, format, surrogate, private use; line and paragraph separators.
# models.VISIBLE refuses the same in names at the API server.
HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
# Kept in free text: they only break lines.
_LAYOUT = frozenset("\n\t")


def visible(text: str) -> str:
    """`text` without the characters that could hide or disguise what it says."""
    if text.isprintable():  # the common case, checked in C
        return text
    return "".join(char for char in text if unicodedata.category(char) not in HIDDEN)


def reveal(text: str) -> str:
    """`text` with each hidden character spelled out (`\\u202e`), newlines and tabs kept."""
    if text.isprintable():
        return text
    return "".join(
        f"\\u{ord(char):04x}"
        if char not in _LAYOUT and unicodedata.category(char) in HIDDEN
        else char
        for char in text
    )
