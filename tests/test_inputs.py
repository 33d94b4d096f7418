"""Input loading: every format, every error located by file, line and field; fuzzed."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pyarrow.parquet  # noqa: F401 - imported once here, so the fuzz's deadline never times it
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.inputs import Pair, load_pairs, validate_records
from workers.errors import InputError

PAIRS = [Pair("What is 3 times 20?", "It's 60."), Pair("Multi\nline", 'quotes "and", commas')]


def write(tmp_path: Path, name: str, data: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def as_records() -> list[dict[str, str]]:
    return [{"instruction": p.instruction, "generation": p.generation, "id": "x"} for p in PAIRS]


def test_all_formats_give_the_same_pairs(tmp_path: Path) -> None:
    jsonl = "".join(json.dumps(r) + "\n" for r in as_records())
    array = json.dumps(as_records(), indent=2)
    csv_text = 'instruction,generation,id\n"What is 3 times 20?",It\'s 60.,x\n'
    csv_text += '"Multi\nline","quotes ""and"", commas",x\n'
    with_id = [Pair(p.instruction, p.generation, '{"id": "x"}') for p in PAIRS]
    assert load_pairs(write(tmp_path, "a.jsonl", jsonl)) == with_id
    assert load_pairs(write(tmp_path, "a.ndjson", "\n" + jsonl + "\n\n")) == with_id
    assert load_pairs(write(tmp_path, "a.json", array)) == with_id
    assert load_pairs(write(tmp_path, "a.csv", csv_text)) == with_id
    assert load_pairs("-", stdin=io.BytesIO(array.encode())) == with_id
    assert load_pairs("-", stdin=io.BytesIO(jsonl.encode())) == with_id
    assert load_pairs(write(tmp_path, "a.txt", jsonl)) == with_id


def test_extra_fields_are_kept_and_never_shadow_output_keys(tmp_path: Path) -> None:
    """Issue 11.13: extra input fields travel with the pair; one named like an output key
    (score, model, error ...) is renamed input_<name>, so the documented keys stay ours."""
    record = {
        "id": 7,
        "instruction": "i",
        "source": {"set": "alpaca"},
        "generation": "g",
        "score": "old",
        "model": "m",
        "input_tokens": 3,
    }
    path = write(tmp_path, "x.jsonl", json.dumps(record) + "\n")
    (pair,) = load_pairs(path)
    assert pair.texts == ("i", "g")
    assert json.loads(pair.extra or "{}") == {
        "id": 7,
        "source": {"set": "alpaca"},
        "input_score": "old",
        "input_model": "m",
        "input_input_tokens": 3,
    }
    plain = write(tmp_path, "y.jsonl", json.dumps({"instruction": "i", "generation": "g"}))
    assert load_pairs(plain)[0].extra is None


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        (
            "bad.jsonl",
            '{"instruction": "a", "generation": "b"}\n{"instruction": "a",\n',
            "bad.jsonl:2",
        ),
        ("bad.jsonl", '{"instruction": "a"}\n', "bad.jsonl:1: field 'generation': missing"),
        (
            "bad.jsonl",
            '{"instruction": 3, "generation": "b"}\n',
            "field 'instruction': must be a string, got number",
        ),
        ("bad.jsonl", '{"instruction": null, "generation": "b"}\n', "got null"),
        ("bad.jsonl", '{"instruction": ["a"], "generation": "b"}\n', "got array"),
        ("bad.jsonl", '["a", "b"]\n', "bad.jsonl:1: expected an object, got array"),
        (
            "bad.json",
            '[\n {"instruction": "a", "generation": "b"},\n'
            ' {"instruction": "a",\n  "generation": {}}\n]',
            "bad.json:3: field 'generation': must be a string, got object",
        ),
        ("bad.json", '[{"instruction": "a", "generation": "b"},', "bad.json:1"),
        ("bad.json", '{"instruction": "a", "generation": "b"}', "expected a JSON array"),
        ("bad.csv", "instruction,answer\na,b\n", "field 'generation'"),
        ("bad.csv", "instruction,generation\na,b\nc,d,e\n", "bad.csv:3: expected 2 columns, got 3"),
        ("bad.csv", 'instruction,generation\n"multi\nline",b\nc\n', "bad.csv:4"),
        ("empty.jsonl", "", "no pairs found"),
        ("empty.json", "[]", "no pairs found"),
        ("empty.csv", "instruction,generation\n", "no pairs found"),
    ],
)
def test_errors_name_file_line_and_field(
    tmp_path: Path, name: str, body: str, expected: str
) -> None:
    with pytest.raises(InputError) as info:
        load_pairs(write(tmp_path, name, body))
    assert expected in str(info.value)


def test_encodings(tmp_path: Path) -> None:
    record = json.dumps({"instruction": "é", "generation": "ü"}) + "\n"
    assert load_pairs(write(tmp_path, "bom.jsonl", b"\xef\xbb\xbf" + record.encode())) == [
        Pair("é", "ü")
    ]
    with pytest.raises(InputError, match="UTF-16"):
        load_pairs(write(tmp_path, "u16.jsonl", record.encode("utf-16")))
    bad = record.encode() + b'{"instruction": "\xff", "generation": "x"}\n'
    with pytest.raises(InputError) as info:
        load_pairs(write(tmp_path, "latin.jsonl", bad))
    assert "latin.jsonl:2" in str(info.value) and "UTF-8" in str(info.value)


def test_json_lines_split_at_newlines_only(tmp_path: Path) -> None:
    """U+2028, U+0085 and friends may stand raw inside a JSON string; they end no line."""
    text = "line\u2028separator\x85next\x1cfile"
    body = (json.dumps({"instruction": text, "generation": "g"}, ensure_ascii=False) + "\r\n") * 2
    expected = [Pair(text, "g")] * 2
    assert load_pairs(write(tmp_path, "seps.jsonl", body.encode())) == expected
    assert load_pairs(write(tmp_path, "seps.txt", body.encode())) == expected  # sniffed


def test_missing_file() -> None:
    with pytest.raises(InputError, match="cannot read file"):
        load_pairs("/nonexistent/pairs.jsonl")


def test_validate_records_for_the_python_api() -> None:
    assert [p.texts for p in validate_records(as_records())] == [p.texts for p in PAIRS]
    with pytest.raises(InputError, match=r"<python>:2: field 'generation'"):
        validate_records([as_records()[0], {"instruction": "a", "generation": 1}])


def test_empty_strings_are_kept_for_per_item_error_records(tmp_path: Path) -> None:
    path = write(tmp_path, "e.jsonl", '{"instruction": "a", "generation": ""}\n')
    assert load_pairs(path) == [Pair("a", "")]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".json", ".jsonl", ".csv", ".dat"]))
def test_fuzz_loader_returns_pairs_or_our_error(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = write(tmp_path, "fuzz" + suffix, data)
    try:
        pairs = load_pairs(path)
    except InputError:
        return
    assert pairs and all(isinstance(p, Pair) for p in pairs)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150)
@given(
    records=st.lists(
        json_values
        | st.fixed_dictionaries({"instruction": json_values, "generation": json_values}),
        max_size=4,
    )
)
def test_fuzz_validate_records(records: list[object]) -> None:
    try:
        pairs = validate_records(records)
    except InputError:
        return
    assert len(pairs) == len(records)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200), suffix=st.sampled_from([".json", ".jsonl", ".csv"]))
def test_fuzz_loader_on_text(tmp_path: Path, text: str, suffix: str) -> None:
    path = write(tmp_path, "fuzz" + suffix, text.encode("utf-8", "surrogatepass"))
    with contextlib.suppress(InputError):
        load_pairs(path)
