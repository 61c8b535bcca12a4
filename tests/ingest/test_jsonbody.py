"""The one bounded JSON parse (issue 12, item 3): it refuses what nests deeper
than MAX_DEPTH before the parser recurses, and reads everything else as
`json.loads` does."""

from __future__ import annotations

import json
import time

import pytest

from incident_operator.ingest.jsonbody import MAX_DEPTH, JsonRefused, loads, nesting_depth


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_the_limit_is_64_levels() -> None:
    assert MAX_DEPTH == 64
    assert loads(nested(64)) == json.loads(nested(64))
    with pytest.raises(JsonRefused, match="deeper than 64 levels") as refused:
        loads(nested(65))
    assert refused.value.code == "json_too_deep"


@pytest.mark.parametrize(
    "document",
    [
        nested(1000),  # RecursionError in json.loads
        "[" * 100_000,  # never closed: json.loads recurses before it finds out
        '{"a": ' * 5000 + "1" + "}" * 5000,
        '[{"a": [' * 30 + "]}]" * 30,
    ],
    ids=["arrays", "unclosed", "objects", "mixed"],
)
def test_deep_documents_are_refused_without_recursing(document: str) -> None:
    with pytest.raises(JsonRefused) as refused:
        loads(document.encode())
    assert refused.value.code == "json_too_deep"


@pytest.mark.parametrize(
    ("document", "depth"),
    [
        ("{}", 1),
        ('{"a": "[[[[[[[["}', 1),  # brackets in strings do not nest
        ('{"a": "\\"[[[", "b": [[]]}', 3),  # nor after an escaped quote
        ('["\\\\", [[]]]', 3),  # an escaped backslash ends before the quote
        ('"abc', 0),
        ('["abc\\', 1),
        ("12", 0),
    ],
)
def test_depth_counts_the_brackets_the_parser_would_open(document: str, depth: int) -> None:
    assert nesting_depth(document) == depth


@pytest.mark.parametrize(
    "document",
    [
        '"\\"' * 80_000,  # quotes and escapes: no backtracking
        '"' + "\\" * 200_000,
        "][" * 100_000,
        json.dumps({"summary": "x" * 250_000}),
    ],
    ids=["escaped-quotes", "backslashes", "brackets", "huge-string"],
)
def test_the_depth_pass_is_linear(document: str) -> None:
    started = time.perf_counter()
    nesting_depth(document)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"", "Expecting value"),
        (b'{"a": 1', "Expecting ',' delimiter"),
        (b"\x00\x01\x02", "not valid JSON"),
        (b"1" * 5000, "4300 digits"),
    ],
)
def test_what_is_not_json_is_refused_with_the_reason(raw: bytes, complaint: str) -> None:
    with pytest.raises(JsonRefused, match=complaint) as refused:
        loads(raw)
    assert refused.value.code == "invalid_json"
    assert str(refused.value).startswith("the request body is not valid JSON")


def test_reads_what_json_loads_reads() -> None:
    for document in ['{"a": [1, 2.5, null, true, "é\\u00e9"]}', '"\\ud800"', "1e999999"]:
        assert repr(loads(document.encode())) == repr(json.loads(document))
    assert loads('{"a": 1}'.encode("utf-16")) == {"a": 1}
