"""Reading operator-supplied YAML/JSON safely: size, encoding, aliases, depth, huge integers, surrogates."""

import codecs
import datetime
import time
from pathlib import Path

import pytest

from auditors import safe_yaml
from auditors.safe_yaml import DocumentError, load_document

ALIAS_BOMB = (b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
              + b"".join(f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n".encode()
                         for p, n in zip("abcdefgh", "bcdefghi", strict=True)))


@pytest.fixture(params=[loader.__name__ for loader in safe_yaml._LOADERS])
def yaml_loader(request, monkeypatch):
    """Run YAML cases through each available parser: libyaml's (when built) and the pure-Python fallback."""
    loader = next(c for c in safe_yaml._LOADERS if c.__name__ == request.param)
    monkeypatch.setattr(safe_yaml, "_LOADERS", [loader])
    return loader


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


VALID = [  # (file name, bytes, parsed value)
    ("pairs.yaml", b"pairs:\n  - clusters: {name: aks-*}\n    registries: [acr1]\n",
     {"pairs": [{"clusters": {"name": "aks-*"}, "registries": ["acr1"]}]}),
    ("bom.yaml", codecs.BOM_UTF8 + b"a: 1\n", {"a": 1}),
    ("dates.yaml", b"d: 2027-03-31\ns: '2027-03-31'\n", {"d": datetime.date(2027, 3, 31), "s": "2027-03-31"}),
    ("unicode.yaml", "owner: Zoë 😀\n".encode(), {"owner": "Zoë 😀"}),
    ("empty.yaml", b"", None),
    ("limit.yaml", b"n: " + b"9" * safe_yaml.MAX_INT_DIGITS + b"\n", {"n": int("9" * safe_yaml.MAX_INT_DIGITS)}),
    ("depth.yaml", b"a: " + b"[" * 63 + b"]" * 63 + b"\n", {"a": nested(63)}),
    ("pairs.json", b'{"pairs": [{"clusters": {"name": "aks-*"}}]}', {"pairs": [{"clusters": {"name": "aks-*"}}]}),
    ("bom.json", codecs.BOM_UTF8 + b'{"a": 1}', {"a": 1}),
    ("pair.json", b'{"a": "\\ud83d\\ude00"}', {"a": "😀"}),
    ("depth.json", b"[" * 64 + b"]" * 64, nested(64)),
    ("brackets-in-strings.json", b'{"a": "' + b"[" * 200 + b'"}', {"a": "[" * 200}),
    ("UPPER.JSON", b'{"a": 1}', {"a": 1}),
]


@pytest.mark.parametrize(("name", "data", "expected"), VALID)
def test_valid_documents_load(tmp_path, yaml_loader, name, data, expected):
    assert load_document(write(tmp_path, name, data)) == expected


INVALID = [  # (file name, bytes, line or None, words the one-line message must contain)
    ("bomb.yaml", ALIAS_BOMB, 1, "anchors (&a) are not allowed"),
    ("alias.yaml", b"a: 1\nb:\n  - x\n  - *a\n", 4, "aliases (*a) are not allowed"),
    ("merge.yaml", b"base: &base {x: 1}\nother:\n  <<: *base\n", 1, "anchors (&base)"),
    ("deep.yaml", b"a: " + b"[" * 65 + b"]" * 65 + b"\n", 1, "deeper than 64 levels"),
    ("deep-block.yaml", b"".join(b"  " * i + b"k:\n" for i in range(80)), 65, "deeper than 64 levels"),
    ("int.yaml", b"a: 1\nb: " + b"9" * 5000 + b"\n", 2, "integer of 5000 digits is too large"),
    ("dup.yaml", b"a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a'"),
    ("ctrl.yaml", b"a: 1\nb: \x07\n", 2, "control character U+0007"),
    ("tag.yaml", b"a: !!python/object/apply:os.system ['id']\n", 1, "could not determine a constructor"),
    ("syntax.yaml", b"a: [1\nb: 2\n", 2, "invalid YAML"),
    ("two.yaml", b"a: 1\n---\nb: 2\n", 2, "expected a single document"),
    ("date.yaml", b"d: 2027-02-30\n", 1, "not a valid date"),
    ("latin1.yaml", b"a: 1\nb: caf\xe9\n", 2, "not UTF-8 text: byte 0xe9"),
    ("utf16.yaml", "a: 1\n".encode("utf-16"), None, "UTF-16 text; save it as UTF-8"),
    ("utf16.json", '{"a": 1}'.encode("utf-16-le"), None, "looks like UTF-16 text"),
    ("utf32.yaml", "a: 1\n".encode("utf-32"), None, "UTF-32 text"),
    ("binary.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", None, "binary (it contains NUL bytes)"),
    ("syntax.json", b'{"a": 1,\n "b": }', 2, "invalid JSON: Expecting value"),
    ("deep.json", b'{"a":\n' + b"[" * 65 + b"]" * 65 + b"}", 2, "deeper than 64 levels"),
    ("empty.json", b"", 1, "invalid JSON"),
]


@pytest.mark.parametrize(("name", "data", "line", "words"), INVALID)
def test_invalid_documents_fail_with_one_line_naming_file_and_line(tmp_path, yaml_loader, name, data, line, words):
    path = write(tmp_path, name, data)
    with pytest.raises(DocumentError) as caught:
        load_document(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: " + (f"line {line}: " if line else ""))
    assert caught.value.line == line
    assert words in message


def test_a_lone_surrogate_escape_is_refused_by_either_parser(tmp_path, yaml_loader):
    with pytest.raises(DocumentError) as caught:
        load_document(write(tmp_path, "s.yaml", b'a: 1\nb: "\\ud800"\n'))
    # the Python parser decodes the escape (refused here); libyaml refuses the escape itself
    assert caught.value.line == 2
    assert "surrogate" in caught.value.problem or "invalid Unicode character escape" in caught.value.problem


JSON_AFTER_DECODING = [  # (bytes, key path, words): refused after decoding, located by key path
    (b'{"a": {"b": [1, ' + b"9" * 5000 + b"]}}", "a.b[1]", "integer of 5000 digits is too large"),
    (b'{"a": ["\\ud800"]}', "a[0]", "lone surrogate"),
    (b'{"\\udc00": 1}', "the top level", "lone surrogate"),
    (b'{"x": [{"a": 1, "a": 2}]}', "x[0]", "duplicate key 'a'"),
    (b'{"x": NaN}', "x", "NaN is not valid JSON"),
    (b'{"x": -Infinity}', "x", "-Infinity is not valid JSON"),
]


@pytest.mark.parametrize(("data", "where", "words"), JSON_AFTER_DECODING)
def test_json_values_refused_after_decoding_name_their_key_path(tmp_path, data, where, words):
    path = write(tmp_path, "doc.json", data)
    with pytest.raises(DocumentError) as caught:
        load_document(path)
    assert str(caught.value) == f"{path}: at {where}: {caught.value.problem}"
    assert words in caught.value.problem


def test_alias_bomb_fails_at_once_with_a_small_message(tmp_path, yaml_loader):
    path = write(tmp_path, "bomb.yaml", ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 600
    started = time.perf_counter()
    with pytest.raises(DocumentError) as caught:
        load_document(path)
    assert time.perf_counter() - started < 0.5
    assert len(str(caught.value)) < len(str(path)) + 100


def test_size_cap_names_the_file_and_its_size(tmp_path):
    path = write(tmp_path, "big.yaml", b"a: " + b"x" * 2000 + b"\n")
    with pytest.raises(DocumentError) as caught:
        load_document(path, max_bytes=1000, kind="exemptions file")
    assert str(caught.value) == f"{path}: exemptions file is 2,004 bytes; the limit is 1,000 bytes"
    assert load_document(path, max_bytes=2004) == {"a": "x" * 2000}


def test_size_cap_holds_for_files_that_report_no_size(tmp_path):
    if not Path("/dev/zero").exists():
        pytest.skip("needs /dev/zero")
    with pytest.raises(DocumentError, match=r"/dev/zero: pairs file is more than 1,000 bytes, the limit"):
        load_document("/dev/zero", max_bytes=1000)


def test_a_missing_file_is_a_document_error_naming_it(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(DocumentError, match=r"absent\.yaml: cannot read pairs file: No such file"):
        load_document(path)


def test_depth_limit_is_a_parameter(tmp_path, yaml_loader):
    shallow = write(tmp_path, "d.yaml", b"a: {b: {c: 1}}\n")
    assert load_document(shallow, max_depth=3) == {"a": {"b": {"c": 1}}}
    with pytest.raises(DocumentError, match="deeper than 2 levels"):
        load_document(shallow, max_depth=2)


def test_parse_document_parses_bytes_already_read():
    assert safe_yaml.parse_document(b"a: 1\n", path="x.yaml") == {"a": 1}
    assert safe_yaml.parse_document(b'{"a": 1}', path="x.json") == {"a": 1}
