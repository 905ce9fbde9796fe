"""Read an operator-supplied YAML or JSON document (pairs file, exemptions file) without trusting it.

What a hostile or broken file cannot do here:
- exhaust memory or time: the file is capped in size (default 5 MB), nesting is capped (default 64 levels),
  and YAML anchors and aliases are refused outright, so an alias bomb ("billion laughs") stops at its first
  anchor instead of expanding;
- smuggle in non-text: only UTF-8 is read (a UTF-8 byte order mark is allowed); UTF-16/32 and binary files
  are refused with a one-line message, as are lone surrogates (from `\\ud800`-style escapes), integers longer
  than Python converts (4300 digits by default), duplicate mapping keys (which YAML and JSON silently
  resolve to the last one) and JSON's non-standard NaN/Infinity;
- construct objects: YAML goes through PyYAML's safe constructor only.

Every problem is a `DocumentError`, one line: `{path}: line {n}: {problem}` when the line is known (YAML marks,
JSON decode errors), `{path}: at {where}: {problem}` for JSON values found after decoding (`where` is the
key path, e.g. `exemptions[2].id`), else `{path}: {problem}`.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

try:  # libyaml parses about four times faster; the Python parser is the fallback
    from yaml.cyaml import CParser as _Parser
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    _Parser = None

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64
MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4300
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Characters YAML 1.1 does not allow in a stream (PyYAML's Reader rejects the same set).
_YAML_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_JSON_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')
_FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


class DocumentError(ValueError):
    """A document that cannot be read safely; `str()` is one line naming the file (and line when known)."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None, where: str = "") -> None:
        self.path, self.problem, self.line, self.where = str(path), _one_line(problem), line, where
        if line is not None:
            text = f"{self.path}: line {line}: {self.problem}"
        elif where:
            text = f"{self.path}: at {where}: {self.problem}"
        else:
            text = f"{self.path}: {self.problem}"
        super().__init__(text)


def load_document(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, kind: str = "pairs file",
                  max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """The parsed document: JSON when the name ends in `.json`, else YAML. An empty YAML file is None."""
    data = read_capped(path, max_bytes=max_bytes, kind=kind)
    return parse_document(data, path=path, kind=kind, max_depth=max_depth)


def read_capped(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, kind: str = "pairs file") -> bytes:
    """The file's bytes, refusing files over `max_bytes` before reading them (and while reading: special files
    report size 0)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise DocumentError(path, f"{kind} is {size:,} bytes; the limit is {max_bytes:,} bytes")
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise DocumentError(path, f"cannot read {kind}: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise DocumentError(path, f"{kind} is more than {max_bytes:,} bytes, the limit")
    return data


def parse_document(data: bytes, *, path: str | Path, kind: str = "pairs file",
                   max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse bytes already read (so a caller can hash exactly what was parsed)."""
    text = decode_utf8(data, path=path, kind=kind)
    if Path(path).suffix.lower() == ".json":
        return _parse_json(text, path, max_depth)
    return _parse_yaml(text, path, max_depth)


def decode_utf8(data: bytes, *, path: str | Path, kind: str = "pairs file") -> str:
    for bom, encoding in _FOREIGN_BOMS:
        if data.startswith(bom):
            raise DocumentError(path, f"{kind} is {encoding} text; save it as UTF-8")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    if b"\x00" in data:
        # UTF-16 without a byte order mark puts a NUL next to every ASCII character
        looks_utf16 = data.count(b"\x00") * 3 >= len(data)
        raise DocumentError(path, f"{kind} looks like UTF-16 text; save it as UTF-8" if looks_utf16
                            else f"{kind} is binary (it contains NUL bytes), not UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DocumentError(path, f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded; "
                                  f"save the {kind} as UTF-8", line=line) from None


# -- YAML ---------------------------------------------------------------------------------------------------


class _RefusingComposer(Composer):
    """Builds the node tree, refusing anchors/aliases and nesting deeper than `max_depth` collections."""

    max_depth = DEFAULT_MAX_DEPTH

    def __init__(self) -> None:
        Composer.__init__(self)
        self.depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            raise _Refused(f"aliases (*{event.anchor}) are not allowed; repeat the value instead", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise _Refused(f"anchors (&{event.anchor}) are not allowed; repeat the value instead", event.start_mark)
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > self.max_depth:
            raise _Refused(f"nesting is deeper than {self.max_depth} levels", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _CheckingConstructor(SafeConstructor):
    """Safe constructor that refuses values Python would choke on later, at the line they appear."""

    def construct_scalar(self, node):
        value = super().construct_scalar(node)
        if isinstance(value, str) and _SURROGATE.search(value):
            raise _Refused("a lone surrogate (an escape such as \\ud800) is not a character", node.start_mark)
        return value

    def construct_yaml_int(self, node):
        digits = len(str(node.value).lstrip("+-").replace("_", ""))
        if digits > MAX_INT_DIGITS:
            raise _Refused(f"integer of {digits} digits is too large (at most {MAX_INT_DIGITS})", node.start_mark)
        return super().construct_yaml_int(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise _Refused(f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            except TypeError:  # an unhashable key: the base constructor reports it
                continue
        return super().construct_mapping(node, deep=deep)


    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:  # e.g. 2027-02-30: PyYAML lets datetime's error escape unmarked
            raise _Refused(f"{node.value!r} is not a valid date or time ({exc})", node.start_mark) from None


_CheckingConstructor.add_constructor("tag:yaml.org,2002:int", _CheckingConstructor.construct_yaml_int)
_CheckingConstructor.add_constructor("tag:yaml.org,2002:timestamp", _CheckingConstructor.construct_yaml_timestamp)


class _PythonLoader(Reader, Scanner, Parser, _RefusingComposer, _CheckingConstructor, Resolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _RefusingComposer.__init__(self)
        _CheckingConstructor.__init__(self)
        Resolver.__init__(self)


_LOADERS: list[type] = [_PythonLoader]
if _Parser is not None:

    class _FastLoader(_RefusingComposer, _Parser, _CheckingConstructor, Resolver):
        """libyaml's parser (events) under the Python composer, so aliases and depth are still checked."""

        def __init__(self, stream: str) -> None:
            _Parser.__init__(self, stream)
            _RefusingComposer.__init__(self)
            _CheckingConstructor.__init__(self)
            Resolver.__init__(self)

    _LOADERS.insert(0, _FastLoader)


class _Refused(yaml.MarkedYAMLError):
    def __init__(self, problem: str, mark) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def _parse_yaml(text: str, path: str | Path, max_depth: int, loader_class: type | None = None) -> Any:
    bad = _YAML_NON_PRINTABLE.search(text)
    if bad:
        raise DocumentError(path, f"control character U+{ord(bad.group()):04X} is not allowed in YAML",
                            line=text.count("\n", 0, bad.start()) + 1)
    loader = (loader_class or _LOADERS[0])(text)
    loader.max_depth = max_depth
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.problem} ({exc.context})"
        prefix = "" if isinstance(exc, _Refused) else "invalid YAML: "
        raise DocumentError(path, prefix + problem, line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise DocumentError(path, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


# -- JSON ---------------------------------------------------------------------------------------------------


class _Invalid:
    """Stands in for a JSON value that decoded but must be refused; reported with its key path afterwards."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _json_int(text: str) -> int | _Invalid:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Invalid(f"integer of {digits} digits is too large (at most {MAX_INT_DIGITS})")
    return int(text)


def _json_object(pairs: list[tuple[str, Any]]) -> dict | _Invalid:
    result = {}
    for key, value in pairs:
        if key in result:
            return _Invalid(f"duplicate key {key!r}")
        result[key] = value
    return result


def _json_constant(name: str) -> _Invalid:
    return _Invalid(f"{name} is not valid JSON")


def _parse_json(text: str, path: str | Path, max_depth: int) -> Any:
    _check_json_depth(text, path, max_depth)
    try:
        document = json.loads(text, parse_int=_json_int, parse_constant=_json_constant,
                              object_pairs_hook=_json_object)
    except json.JSONDecodeError as exc:
        raise DocumentError(path, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    problem = _first_invalid(document)
    if problem:
        where, text_problem = problem
        raise DocumentError(path, text_problem, where=where or "the top level")
    return document


def _check_json_depth(text: str, path: str | Path, max_depth: int) -> None:
    depth = 0
    for match in _JSON_STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                raise DocumentError(path, f"nesting is deeper than {max_depth} levels",
                                    line=text.count("\n", 0, match.start()) + 1)
        elif token in "]}":
            depth -= 1


def _first_invalid(document: Any) -> tuple[str, str] | None:
    """(key path, problem) of the first refused value, walking without recursion."""
    pending: list[tuple[str, Any]] = [("", document)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, _Invalid):
            return where, value.problem
        if isinstance(value, str) and _SURROGATE.search(value):
            return where, "a lone surrogate (an escape such as \\ud800) is not a character"
        if isinstance(value, dict):
            for key, item in reversed(value.items()):
                if _SURROGATE.search(key):
                    return where, f"key {key!r} holds a lone surrogate (an escape such as \\ud800)"
                pending.append((f"{where}.{key}" if where else key, item))
        elif isinstance(value, list):
            pending.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(value))))
    return None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
