"""The Azure infrastructure (infra/, azure.yaml), proven offline: there is no Bicep compiler and no Functions host here.

- Every .bicep file parses (tree-sitter-bicep); module, load and parameter references resolve across files.
- A small evaluator reads the Bicep as ARM would for the constructs these templates use (parameters, variables,
  loops, conditions, string interpolation, loadJsonContent/loadTextContent, json/string/join/replace ...), so the
  tests check what the templates produce: the app settings (fed to the app's own Settings validation), the DCR
  stream declarations and data flows, the tables, the alert rules, the workbook.
- checkov's Bicep policies pass, with every skip justified in place.
- Every KQL string (workbook, alert rules, DCR transform) is valid against the real table schemas.
- The post-provision hook (azure.yaml) and the Microsoft Graph grant script run against a fake `az` that keeps
  state and evaluates `--query` with JMESPath, as the real CLI does.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

from auditors.settings import Settings, valid_schedule
from tests.kql import kusto

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "modules"
TABLES_JSON = ROOT / "auditors" / "sinks" / "log_analytics_tables.json"
WORKBOOK_JSON = INFRA / "workbook" / "acr-pull-audit.workbook.json"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
LA_RESOURCE_TYPE = "microsoft.operationalinsights/workspaces"

# Settings.ENVIRONMENT variables the app must NOT get in Azure, and why.
NOT_IN_AZURE = {
    # Shared keys are disabled on the storage account; a connection string is for Azurite in development.
    "AUDIT_STORAGE_CONNECTION_STRING",
    # Laptop-only static tokens: in Azure the managed identity signs in.
    "AZURE_ACCESS_TOKEN", "LOGS_ACCESS_TOKEN", "AUDIT_STORAGE_ACCESS_TOKEN", "GRAPH_ACCESS_TOKEN",
    "LOGS_QUERY_ACCESS_TOKEN", "KEYVAULT_ACCESS_TOKEN",
}
# Read by the code elsewhere (credentials, requests), never set in Azure: laptop-only static tokens and a custom CA.
NEVER_SET = {"REQUESTS_CA_BUNDLE",
             *NOT_IN_AZURE}
# Needed by the host and the SDKs besides Settings.ENVIRONMENT.
RUNTIME_SETTINGS = {
    "AZURE_CLIENT_ID", "AzureWebJobsStorage__accountName", "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId", "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# Flex Consumption rejects these (the runtime is declared in functionAppConfig); AzureWebJobsStorage would be a key.
FLEX_FORBIDDEN = {
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD",
    "WEBSITE_TIME_ZONE", "TZ", "AzureWebJobsStorage",
}
ROLE = {
    "reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
    "log_analytics_reader": "73c42c96-874c-492b-b04d-ab87d138a893",
    "monitoring_metrics_publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "storage_blob_data_owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storage_blob_data_contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "key_vault_crypto_user": "12338af0-0e69-4776-bea7-57ae8d297424",
}
MAIN_PARAMS = {"environmentName": "test", "location": "westeurope", "securityTeamEmail": "security@example.com"}
APPROVERS_GROUP = "11111111-2222-3333-4444-555555555555"
OWNERS = [{"owner": "team-payments", "email": "payments@example.com"},
          {"owner": "team-search", "email": "search@example.com"}]

LANGUAGE = Language(tree_sitter_bicep.language())
COMMENTS = {"comment", "diagnostic_comment"}


# -- parsing -------------------------------------------------------------------------------------------------------
def parse(source: bytes) -> Node:
    return Parser(LANGUAGE).parse(source).root_node


def syntax_problems(root: Node) -> list[str]:
    problems = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            kind = "missing " + node.type if node.is_missing else "syntax error"
            problems.append(f"{kind} at line {node.start_point[0] + 1}, column {node.start_point[1] + 1}")
        stack.extend(node.children)
    return problems


def named(node: Node) -> list[Node]:
    return [c for c in node.named_children if c.type not in COMMENTS]


def text(node: Node) -> str:
    return node.text.decode()


def literal(node: Node) -> str | None:
    """The value of a string without interpolation, else None."""
    if node.type != "string" or any(c.type == "interpolation" for c in node.children):
        return None
    return "".join(text(c) for c in node.children if c.type == "string_content")


def property_key(prop: Node) -> str:
    key = prop.named_children[0]
    return literal(key) if key.type == "string" else text(key)


def properties(obj: Node) -> dict[str, Node]:
    """object node -> {key: value node}."""
    return {property_key(p): p.named_children[-1] for p in obj.named_children if p.type == "object_property"}


def misread_postfix(node: Node) -> bool:
    """Where tree-sitter-bicep and Bicep disagree: it parses `a ? b : c.d` as `(a ? b : c).d` (and `a && b.c` as
    `(a && b).c`), and an array item `x[i].y` as two items `x` and `[i].y`. The templates parenthesise such
    expressions so that this parse, and the evaluator below, read them as Bicep does."""
    if node.type in ("member_expression", "subscript_expression") and named(node)[0].type in (
            "ternary_expression", "binary_expression"):
        return True
    if node.type == "array":
        items = named(node)
        for first, second in itertools.pairwise(items):
            between = [c.type for c in node.children if first.end_byte <= c.start_byte < second.start_byte]
            if first.end_point[0] == second.start_point[0] and "," not in between:
                return True
    return False


def walk(node: Node):
    yield node
    for child in node.children:
        yield from walk(child)


@dataclass
class Declaration:
    kind: str  # param, var, resource, module, output
    name: str
    node: Node
    value: Node | None
    type: str = ""  # resource type or module path
    decorators: list[Node] = field(default_factory=list)


@dataclass
class BicepFile:
    path: Path
    root: Node
    declarations: dict[str, Declaration]  # parameters, variables, resources, modules: one namespace
    outputs: dict[str, Declaration]  # outputs may reuse those names
    target_scope: str

    def of(self, kind: str) -> dict[str, Declaration]:
        if kind == "output":
            return self.outputs
        return {n: d for n, d in self.declarations.items() if d.kind == kind}


@cache
def bicep(path: Path) -> BicepFile:
    root = parse(path.read_bytes())
    declarations: dict[str, Declaration] = {}
    outputs: dict[str, Declaration] = {}
    decorators: list[Node] = []
    scope = "resourceGroup"
    for child in root.named_children:
        if child.type == "decorators":
            decorators = [d for d in child.named_children if d.type == "decorator"]
            continue
        if child.type == "target_scope_assignment":
            scope = literal(child.named_children[-1]) or scope
        kind = {"parameter_declaration": "param", "variable_declaration": "var", "resource_declaration": "resource",
                "module_declaration": "module", "output_declaration": "output"}.get(child.type)
        if kind:
            name = text(child.named_children[0])
            type_ = literal(child.named_children[1]) if kind in ("resource", "module") else ""
            value = named(child)[-1] if "=" in [c.type for c in child.children] else None
            declaration = Declaration(kind, name, child, value, type_ or "", decorators)
            (outputs if kind == "output" else declarations)[name] = declaration
        if child.type not in COMMENTS:
            decorators = []
    return BicepFile(path, root, declarations, outputs, scope)


def module_file(caller: Path, declaration: Declaration) -> Path:
    return (caller.parent / declaration.type).resolve()


def body_object(value: Node) -> Node:
    """The object of a resource/module value: plain, `if (...) {}` or `[for ...: {}]`."""
    while value.type in ("if_statement", "for_statement"):
        value = named(value)[-1]
    return value


def loads(path: Path) -> list[tuple[str, Path]]:
    found = []
    for node in walk(bicep(path).root):
        if node.type == "call_expression" and text(node.named_children[0]) in ("loadTextContent", "loadJsonContent"):
            argument = literal(named(node.named_children[1])[0])
            found.append((text(node.named_children[0]), (path.parent / argument).resolve()))
    return found


# -- evaluation ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ref:
    """A value known only at deployment: a resource or module property, or an opaque function result."""

    path: tuple

    def then(self, *more) -> Ref:
        return Ref(self.path + more)

    def __str__(self) -> str:
        return "{{" + ".".join(str(p) for p in self.path) + "}}"


def known(*values) -> bool:
    return not any(isinstance(v, Ref) for v in values)


class Evaluator:
    """Evaluates Bicep expressions of one file with given parameter values (defaults for the others)."""

    def __init__(self, path: Path, params: dict[str, Any] | None = None) -> None:
        self.file = bicep(path)
        self.params = dict(params or {})
        self._vars: dict[str, Any] = {}

    def value(self, name: str, scope: dict[str, Any] | None = None) -> Any:
        scope = scope or {}
        if name in scope:
            return scope[name]
        declaration = self.file.declarations.get(name)
        if declaration is None:
            raise KeyError(f"{self.file.path.name}: {name} is not declared")
        if declaration.kind == "param":
            if name not in self.params:
                if declaration.value is None:
                    raise KeyError(f"{self.file.path.name}: parameter {name} has no value and no default")
                self.params[name] = self.eval(declaration.value)
            return self.params[name]
        if declaration.kind == "var":
            if name not in self._vars:
                self._vars[name] = self.eval(declaration.value)
            return self._vars[name]
        return Ref((name,))  # a resource or module

    def instances(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(loop scope, evaluated body) of each instance of a resource or module; none when its condition is false."""
        value = self.file.declarations[name].value
        return self._instances(value, {})

    def _instances(self, value: Node, scope: dict[str, Any]) -> list[tuple[dict[str, Any], Any]]:
        if value.type == "if_statement":
            condition = self.eval(named(value)[0], scope)
            if known(condition) and not condition:
                return []
            return self._instances(named(value)[-1], scope)
        if value.type == "for_statement":
            return [(inner, body) for inner in self._loop_scopes(value, scope)
                    for inner, body in self._instances(named(value)[-1], inner)]
        return [(scope, self.eval(value, scope))]

    def _loop_scopes(self, node: Node, scope: dict[str, Any]) -> list[dict[str, Any]]:
        parts = named(node)
        variables = parts[0]
        items = self.eval(parts[1], scope)
        if not isinstance(items, list):
            raise ValueError(f"{self.file.path.name}: cannot loop over {text(parts[1])}: {items!r}")
        if variables.type == "for_loop_parameters":
            item_name, index_name = (text(v) for v in variables.named_children)
            return [{**scope, item_name: item, index_name: i} for i, item in enumerate(items)]
        return [{**scope, text(variables): item} for item in items]

    def eval(self, node: Node, scope: dict[str, Any] | None = None) -> Any:
        scope = scope or {}
        kind = node.type
        if kind == "string":
            return self._string(node, scope)
        if kind == "number":
            return int(text(node))
        if kind == "boolean":
            return text(node) == "true"
        if kind == "null":
            return None
        if kind == "identifier":
            return self.value(text(node), scope)
        if kind == "parenthesized_expression":
            return self.eval(named(node)[0], scope)
        if kind == "array":
            return [self.eval(item, scope) for item in named(node)]
        if kind == "object":
            return {property_key(p): self.eval(p.named_children[-1], scope)
                    for p in node.named_children if p.type == "object_property"}
        if kind == "for_statement":
            body = named(node)[-1]
            return [self.eval(body, inner) for inner in self._loop_scopes(node, scope)]
        if kind != "array" and misread_postfix(node):
            raise NotImplementedError(f"{self.file.path.name}: tree-sitter-bicep reads `{text(node)}` as a postfix on "
                                      "the whole expression; parenthesise the last operand")
        if kind == "member_expression":
            member = text(named(node)[-1])
            symbol = named(node)[0]
            if member == "name" and symbol.type == "identifier" and text(symbol) not in scope:
                declaration = self.file.declarations.get(text(symbol))
                if declaration and declaration.kind == "resource" and declaration.value.type == "object":
                    return self.eval(properties(declaration.value)["name"])  # known before deployment
            target = self.eval(symbol, scope)
            if isinstance(target, Ref):
                return target.then(member)
            if ".?" in [c.type for c in node.children]:
                return target.get(member) if isinstance(target, dict) else None
            return target[member]
        if kind == "subscript_expression":
            target, index = self.eval(named(node)[0], scope), self.eval(named(node)[1], scope)
            if not known(target, index):
                return target.then([index]) if isinstance(target, Ref) else Ref(("index",))
            return target[index]
        if kind == "ternary_expression":
            condition, yes, no = named(node)
            test = self.eval(condition, scope)
            if not known(test):
                return Ref(("condition", text(condition)))
            return self.eval(yes if test else no, scope)
        if kind == "unary_expression":
            operand = self.eval(named(node)[0], scope)
            if not known(operand):
                return Ref(("unary",))
            return (not operand) if text(node.children[0]) == "!" else -operand
        if kind == "binary_expression":
            return self._binary(node, scope)
        if kind == "call_expression":
            return self._call(node, scope)
        raise NotImplementedError(f"{self.file.path.name}: cannot evaluate {kind}: {text(node)[:80]}")

    def _string(self, node: Node, scope: dict[str, Any]) -> str:
        out = []
        for child in node.children:
            if child.type == "string_content":
                out.append(text(child))
            elif child.type == "escape_sequence":
                out.append({"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\$": "$"}[text(child)])
            elif child.type == "interpolation":
                value = self.eval(named(child)[0], scope)
                out.append(str(value) if isinstance(value, Ref) else _arm_string(value))
        return "".join(out)

    def _binary(self, node: Node, scope: dict[str, Any]) -> Any:
        left_node, right_node = named(node)
        operator = text(node.children[1])
        left = self.eval(left_node, scope)
        if operator == "&&" and known(left) and not left:
            return False
        if operator == "||" and known(left) and left:
            return True
        if operator == "??" and left is not None:
            return left
        right = self.eval(right_node, scope)
        if not known(left, right):
            return Ref(("expression", text(node)))
        if operator in ("==", "!=", "=~", "!~"):
            fold = (lambda v: v.lower() if isinstance(v, str) else v) if "~" in operator else (lambda v: v)
            equal = fold(left) == fold(right)
            return equal if operator in ("==", "=~") else not equal
        operations = {"&&": lambda a, b: a and b, "||": lambda a, b: a or b, "??": lambda a, b: b,
                      "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
                      "/": lambda a, b: a // b, "%": lambda a, b: a % b, "<": lambda a, b: a < b,
                      ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}
        return operations[operator](left, right)

    def _call(self, node: Node, scope: dict[str, Any]) -> Any:
        function = text(node.named_children[0])
        arguments = [self.eval(a, scope) for a in named(node.named_children[1])]
        base = self.file.path.parent
        if function == "loadTextContent":
            return (base / arguments[0]).read_text(encoding="utf-8")
        if function == "loadJsonContent":
            return json.loads((base / arguments[0]).read_text(encoding="utf-8"))
        if function == "environment":
            return {"name": "AzureCloud", "resourceManager": "https://management.azure.com/"}
        if function in ("subscriptionResourceId", "tenantResourceId") and known(*arguments):
            prefix = "/subscriptions/{{subscription}}" if function == "subscriptionResourceId" else ""
            return f"{prefix}/providers/{arguments[0]}/" + "/".join(arguments[1:])
        if function in ("subscription", "tenant", "resourceGroup", "managementGroup", "guid", "uniqueString",
                        "deployment", "resourceId", "subscriptionResourceId", "tenantResourceId", "reference"):
            return Ref((f"{function}()",))
        if not known(*arguments):
            return Ref((f"{function}()",))
        functions = {
            "json": lambda s: json.loads(s),
            "string": _arm_string,
            "join": lambda items, separator: separator.join(items),
            "replace": lambda s, old, new: s.replace(old, new),
            "empty": lambda v: v is None or len(v) == 0,
            "union": lambda *objects: {k: v for o in objects for k, v in o.items()},
            "concat": lambda *parts: [x for p in parts for x in p] if isinstance(parts[0], list) else "".join(parts),
            "toLower": str.lower, "toUpper": str.upper,
            "split": lambda s, separator: s.split(separator),
            "first": lambda v: v[0], "last": lambda v: v[-1], "length": len,
            "contains": lambda container, item: item in container,
        }
        if function not in functions:
            raise NotImplementedError(f"{self.file.path.name}: function {function}() is not modelled")
        return functions[function](*arguments)


def _arm_string(value: Any) -> str:
    """ARM string(): strings as they are, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    return json.dumps(value, separators=(",", ":"))


def module_params(caller: Evaluator, module: str) -> list[dict[str, Any]]:
    """The evaluated `params` of each instance of a module declared in the caller."""
    return [body.get("params", {}) for _, body in caller.instances(module)]


@cache
def main() -> Evaluator:
    return Evaluator(MAIN, MAIN_PARAMS)


def module_output(module: str, outputs: str, name: str, caller: Evaluator | None = None) -> Any:
    """An output of a module as main.bicep calls it; a Ref when only the deployment knows it."""
    assert outputs == "outputs"
    evaluator = module_evaluator(module, caller=caller)
    return evaluator.eval(evaluator.file.of("output")[name].value)


def module_evaluator(module: str, overrides: dict[str, Any] | None = None,
                     caller: Evaluator | None = None) -> Evaluator:
    """A module of main.bicep (as `caller`, default main() evaluates it) with the parameters main passes; another
    module's output that is known before the deployment (a container name, a stream) is resolved, the rest stays
    a Ref to what that module returns."""
    caller = caller or main()
    declaration = bicep(MAIN).of("module")[module]
    (params,) = module_params(caller, module)
    for name, value in params.items():
        if isinstance(value, Ref) and len(value.path) == 3 and value.path[1] == "outputs":
            params[name] = module_output(*value.path, caller=caller)
    return Evaluator(module_file(MAIN, declaration), {**params, **(overrides or {})})


def resources_of_type(evaluator: Evaluator, resource_type: str) -> dict[str, list[tuple[dict, Any]]]:
    return {name: evaluator.instances(name) for name, d in evaluator.file.of("resource").items()
            if d.type.split("@")[0].lower() == resource_type.lower() and "existing" not in [
                c.type for c in d.node.children]}


def tables_document() -> dict:
    return json.loads(TABLES_JSON.read_text(encoding="utf-8"))


def table_schemas() -> dict[str, dict[str, str]]:
    return {t["table"]: {c["name"]: c["type"] for c in t["columns"]} for t in tables_document()["tables"]}


# -- the parser and the evaluator catch what they should -------------------------------------------------------------
def test_tree_sitter_reports_syntax_errors():
    assert syntax_problems(parse(b"param x string\nresource r 'a@1' = {\n  name: 'x'\n"))
    assert syntax_problems(parse(b"var x = [for i in y: ]\n"))
    assert not syntax_problems(parse(b"param x string\nvar y = '${x}-a'\n"))


def test_evaluator_reads_loops_interpolation_and_conditions(tmp_path):
    (tmp_path / "data.json").write_text('{"items": [{"n": "a"}, {"n": "b"}]}')
    path = tmp_path / "t.bicep"
    path.write_text(r"""param p string = 'x'
param flag bool = false
var doc = loadJsonContent('data.json')
var names = [for (item, i) in doc.items: '${p}-${item.n}-${i}']
var pick = flag ? 'yes' : (doc.items[1].n)
var entries = ['"k": ${length(names)}']
var built = json('{${join(entries, ',')}}')
var unknown = '${uniqueString(p)}-${toLower('A')}'
""")
    evaluator = Evaluator(path, {"p": "q"})
    assert evaluator.value("names") == ["q-a-0", "q-b-1"]
    assert evaluator.value("pick") == "b"
    assert evaluator.value("built") == {"k": 2}
    assert evaluator.value("unknown") == "{{uniqueString()}}-a"
    misread = tmp_path / "misread.bicep"
    misread.write_text("var a = true ? 'x' : 'y'.z\nvar b = [\n  names[0].x\n]\nvar c = [names[0], 'x']\n")
    file = bicep(misread)
    assert syntax_problems(file.root) == []
    with pytest.raises(NotImplementedError, match="parenthesise"):
        Evaluator(misread).value("a")
    flagged = [text(n) for n in walk(file.root) if misread_postfix(n)]
    assert flagged == ["true ? 'x' : 'y'.z", "[\n  names[0].x\n]", "[names[0], 'x']"]


# -- every file parses and every reference resolves ------------------------------------------------------------------
def test_infra_files_exist():
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert {"main.bicep", "management-group-reader.bicep"} <= names
    assert (INFRA / "main.parameters.json").exists() and (ROOT / "azure.yaml").exists()


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_parses(path):
    assert syntax_problems(bicep(path).root) == []
    misread = [f"line {n.start_point[0] + 1}: {text(n)}" for n in walk(bicep(path).root) if misread_postfix(n)]
    assert misread == [], "parenthesise the last operand"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_module_and_load_paths_exist(path):
    for declaration in bicep(path).of("module").values():
        assert module_file(path, declaration).is_file(), f"module {declaration.name}: {declaration.type} is missing"
    for function, target in loads(path):
        assert target.is_file(), f"{function}: {target} is missing"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_parameter_is_used_and_described(path):
    file = bicep(path)
    used = set()
    for node in walk(file.root):
        if node.type != "identifier":
            continue
        parent = node.parent
        if parent.type in ("parameter_declaration", "variable_declaration", "resource_declaration",
                           "module_declaration", "output_declaration") and parent.named_children[0] == node:
            continue
        if parent.type == "object_property" and parent.named_children[0] == node:
            continue  # a property key, not a reference
        used.add(text(node))
    for name, declaration in file.of("param").items():
        assert name in used, f"{path.name}: parameter {name} is never used"
        assert any(text(d).startswith("@description(") for d in declaration.decorators), f"{name}: no @description"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_module_parameters_and_outputs_match_the_module(path):
    file = bicep(path)
    for declaration in file.of("module").values():
        target = bicep(module_file(path, declaration))
        params = properties(body_object(declaration.value)).get("params")
        passed = set(properties(params)) if params is not None else set()
        declared = target.of("param")
        assert passed <= set(declared), f"{declaration.name}: not parameters of {declaration.type}"
        required = {n for n, d in declared.items() if d.value is None}
        assert required <= passed, f"{declaration.name}: required parameters not passed: {required - passed}"
        assert target.target_scope == "resourceGroup", declaration.type
    # every `<module>.outputs.<name>` (or `<module>[i].outputs.<name>`) names an output of that module
    modules = {n: bicep(module_file(path, d)) for n, d in file.of("module").items()}
    for node in walk(file.root):
        if node.type == "member_expression" and text(named(node)[-1]) != "outputs":
            inner = named(node)[0]
            if inner.type == "member_expression" and text(named(inner)[-1]) == "outputs":
                owner = named(inner)[0]
                symbol = text(named(owner)[0]) if owner.type == "subscript_expression" else text(owner)
                if symbol in modules:
                    output = text(named(node)[-1])
                    assert output in modules[symbol].of("output"), f"{symbol} has no output {output}"


def test_target_scopes():
    assert bicep(MAIN).target_scope == "subscription"
    assert bicep(INFRA / "management-group-reader.bicep").target_scope == "managementGroup"
    assert all(bicep(p).target_scope == "resourceGroup" for p in MODULES.glob("*.bicep"))


def test_parameters_file_names_main_parameters():
    document = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    declared = bicep(MAIN).of("param")
    assert set(document["parameters"]) <= set(declared)
    required = {n for n, d in declared.items() if d.value is None}
    assert required <= set(document["parameters"]), "azd would prompt for these on every machine"
    assert document["parameters"]["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert document["parameters"]["location"]["value"] == "${AZURE_LOCATION}"


def test_main_outputs_what_azd_and_the_hook_need():
    outputs = bicep(MAIN).of("output")
    assert {"AZURE_FUNCTION_APP_NAME", "AZURE_LOG_ANALYTICS_WORKSPACE_ID", "LOGS_DCR_IMMUTABLE_ID",
            "LOGS_INGESTION_ENDPOINT", "AZURE_STORAGE_ACCOUNT_NAME", "AUDITOR_PRINCIPAL_ID",
            "AUDIT_READER_MANAGEMENT_GROUP_ID", "AUDIT_GRAPH", "AUDIT_CONTAINER_INSIGHTS",
            "AUDIT_SIGNING_KEY_ID"} <= set(outputs)
    azure_yaml = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    for variable in re.findall(r"\$\{?(?:env:)?(AUDIT\w+|AZURE\w+)", azure_yaml):
        assert variable in outputs or variable in ("AZURE_LOCATION", "AZURE_ENV_NAME") or variable.startswith(
            "AUDITOR_SKIP"), f"azure.yaml uses {variable}, which main.bicep does not output"


def test_feature_switches_reach_the_app_and_the_hook():
    """The outputs the hook reads are the same values the app gets, so a grant follows the feature it serves."""
    for switch, output, setting in (("microsoftGraph", "AUDIT_GRAPH", "AUDIT_GRAPH"),
                                    ("containerInsights", "AUDIT_CONTAINER_INSIGHTS", "AUDIT_CONTAINER_INSIGHTS")):
        for on in (True, False):
            caller = Evaluator(MAIN, {**MAIN_PARAMS, switch: on})
            expected = "true" if on else "false"
            assert caller.eval(caller.file.of("output")[output].value) == expected, (switch, on)
            (app,) = module_evaluator("functionApp", caller=caller).instances("app")
            settings = {s["name"]: s["value"] for s in app[1]["properties"]["siteConfig"]["appSettings"]}
            assert settings[setting] == expected, (switch, on)
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["microsoftGraph"]["value"] == "${AUDITOR_GRAPH=true}"
    assert parameters["containerInsights"]["value"] == "${AUDITOR_CONTAINER_INSIGHTS=true}"
    assert parameters["manifestSigning"]["value"] == "${AUDITOR_MANIFEST_SIGNING=true}"
    assert parameters["exemptionApproversGroupId"]["value"] == "${AUDITOR_EXEMPTION_APPROVERS_GROUP_ID=}"


def test_azure_yaml_deploys_this_folder_and_grants_reader():
    azure_yaml = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    assert re.search(r"services:\n  api:\n    project: \.\n    language: python\n    host: function\n", azure_yaml)
    assert "postprovision:" in azure_yaml
    assert len(re.findall(r"^ +az deployment mg create", azure_yaml, flags=re.M)) == 2  # posix and windows
    assert azure_yaml.count("infra/management-group-reader.bicep") >= 2
    assert azure_yaml.count("principalId=") == 2
    assert azure_yaml.count("grantLogAnalyticsReader=") == 2
    assert "sh infra/hooks/grant-graph-app-roles.sh" in azure_yaml
    assert "pwsh -NoProfile -File infra/hooks/grant-graph-app-roles.ps1" in azure_yaml


# -- the post-provision hook and the Graph grant, against a fake `az` ------------------------------------------------
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_APP_ROLES = {  # the ids Microsoft Graph uses; the script must look them up, not assume them
    "GroupMember.Read.All": "98830695-27a2-44f7-8c18-0c3ebc9698f6",
    "Application.Read.All": "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30",
    "Group.Read.All": "5b567255-7703-4780-807c-7be8301ae99b",
}
FAKE_AZ = r'''
import json, sys
from pathlib import Path
import jmespath

STATE = Path(__file__).with_name("state.json")
state = json.loads(STATE.read_text())
args = sys.argv[1:]
state["calls"].append(args)


def option(name, default=None):
    return args[args.index(name) + 1] if name in args else default


def reply(document):
    query, output = option("--query"), option("--output", "json")
    result = jmespath.search(query, document) if query else document
    STATE.write_text(json.dumps(state))
    if output == "none":
        return
    if output == "tsv":  # as az prints it: one line per list item, nothing for null
        for item in result if isinstance(result, list) else [] if result is None else [result]:
            print(item)
        return
    print(json.dumps(result))


def fail(message):
    STATE.write_text(json.dumps(state))
    sys.stderr.write(message + "\n")
    sys.exit(1)


graph = "https://graph.microsoft.com/v1.0"
if args[:2] == ["cloud", "show"]:
    reply({"endpoints": {"microsoftGraphResourceId": "https://graph.microsoft.com/"}})
elif args[:3] == ["deployment", "mg", "create"]:
    reply({})
elif args[0] == "rest":
    method, url = option("--method"), option("--url")
    graph_sp = {"id": state["graphSpId"], "appId": "00000003-0000-0000-c000-000000000000",
                "appRoles": [{"id": i, "value": v, "allowedMemberTypes": ["Application"]}
                             for v, i in state["appRoles"].items()]}
    assignments = f"{graph}/servicePrincipals/{state['principalId']}/appRoleAssignments"
    if method == "get" and url == f"{graph}/servicePrincipals(appId='00000003-0000-0000-c000-000000000000')":
        reply(graph_sp)
    elif url == assignments and state["notYetReplicated"] > 0:
        state["notYetReplicated"] -= 1
        fail("Not Found({\"error\":{\"code\":\"Request_ResourceNotFound\"}})")
    elif method == "get" and url == assignments:
        reply({"value": state["assignments"]})
    elif method == "post" and url == assignments:
        body = json.loads(option("--body"))
        if state["denyWrites"]:
            fail("Forbidden({\"error\":{\"code\":\"Authorization_RequestDenied\"}})")
        if any(a["appRoleId"] == body["appRoleId"] and a["resourceId"] == body["resourceId"]
               for a in state["assignments"]):
            fail("Bad Request: Permission being assigned already exists on the object")
        state["assignments"].append(body)
        reply(body)
    else:
        fail(f"fake az: unexpected {method} {url}")
else:
    fail(f"fake az: unexpected {args}")
'''


@cache
def jmespath_python() -> str | None:
    """A Python that has jmespath, the library `az --query` evaluates with: this one, or checkov's (checkov needs
    it, and CI installs checkov)."""
    candidates = [Path(os.sys.executable), ROOT / ".venv" / "checkov" / "bin" / "python"]
    for python in candidates:
        if python.exists() and subprocess.run([str(python), "-c", "import jmespath"], capture_output=True,
                                              check=False).returncode == 0:
            return str(python)
    return None


@dataclass
class FakeAz:
    folder: Path
    principal_id: str = "aaaaaaaa-0000-0000-0000-000000000001"

    def __post_init__(self) -> None:
        python = jmespath_python()
        if python is None:
            if os.environ.get("CI_REQUIRE_CHECKOV"):
                pytest.fail("no Python with jmespath (checkov's venv has it) for the fake az")
            pytest.skip("no Python with jmespath for the fake az (install checkov: see checkov_binary)")
        az = self.folder / "az"
        az.write_text(f"#!{python}\n{FAKE_AZ}", encoding="utf-8")
        az.chmod(0o755)
        self.save({"calls": [], "principalId": self.principal_id, "graphSpId": "graph-sp-object-id",
                   "appRoles": GRAPH_APP_ROLES, "assignments": [], "notYetReplicated": 0, "denyWrites": False})

    def state(self) -> dict:
        return json.loads((self.folder / "state.json").read_text(encoding="utf-8"))

    def save(self, state: dict) -> None:
        (self.folder / "state.json").write_text(json.dumps(state), encoding="utf-8")

    def update(self, **changes) -> None:
        self.save({**self.state(), **changes})

    def run(self, script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        environment = {"PATH": f"{self.folder}{os.pathsep}{os.environ['PATH']}", "AUDITOR_GRAPH_RETRY_SECONDS": "0",
                       **(env or {})}
        return subprocess.run(["sh", "-c", script, "hook", *args], cwd=ROOT, env=environment, capture_output=True,
                              text=True, timeout=60, check=False)

    def granted(self) -> set[str]:
        return {a["appRoleId"] for a in self.state()["assignments"]
                if a["principalId"] == self.principal_id and a["resourceId"] == "graph-sp-object-id"}

    def calls(self, *prefix: str) -> list[list[str]]:
        return [c for c in self.state()["calls"] if c[:len(prefix)] == list(prefix)]


GRANT_SCRIPT = 'sh infra/hooks/grant-graph-app-roles.sh "$1"'


def test_graph_roles_are_granted_once_and_looked_up_by_name(tmp_path):
    az = FakeAz(tmp_path)
    az.update(notYetReplicated=2)  # a new identity is not visible in Graph at once
    first = az.run(GRANT_SCRIPT, az.principal_id)
    assert first.returncode == 0, first.stderr
    wanted = {GRAPH_APP_ROLES["GroupMember.Read.All"], GRAPH_APP_ROLES["Application.Read.All"]}
    assert az.granted() == wanted and len(az.state()["assignments"]) == 2
    second = az.run(GRANT_SCRIPT, az.principal_id)
    assert second.returncode == 0, second.stderr
    assert len(az.calls("rest", "--method", "post")) == 2, "a second run must not post again"
    assert second.stdout.count("already granted") == 2


def test_graph_grant_adds_only_the_missing_role(tmp_path):
    az = FakeAz(tmp_path)
    az.update(assignments=[{"principalId": az.principal_id, "resourceId": "graph-sp-object-id",
                            "appRoleId": GRAPH_APP_ROLES["GroupMember.Read.All"]}])
    result = az.run(GRANT_SCRIPT, az.principal_id)
    assert result.returncode == 0, result.stderr
    (post,) = az.calls("rest", "--method", "post")
    assert json.loads(post[post.index("--body") + 1])["appRoleId"] == GRAPH_APP_ROLES["Application.Read.All"]


def test_graph_grant_without_entra_rights_fails_and_says_who_can(tmp_path):
    az = FakeAz(tmp_path)
    az.update(denyWrites=True)
    result = az.run(GRANT_SCRIPT, az.principal_id)
    assert result.returncode != 0
    assert "Privileged Role Administrator" in result.stderr and "AUDITOR_SKIP_GRAPH_ROLES=true" in result.stderr


def posix_hook() -> str:
    import yaml

    return yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))["hooks"]["postprovision"]["posix"]["run"]


def hook_env(az: FakeAz, **overrides: str) -> dict[str, str]:
    return {"AUDITOR_PRINCIPAL_ID": az.principal_id, "AUDIT_READER_MANAGEMENT_GROUP_ID": "corp",
            "AZURE_LOCATION": "westeurope", "AUDIT_GRAPH": "true", "AUDIT_CONTAINER_INSIGHTS": "true", **overrides}


def test_postprovision_hook_grants_management_group_roles_and_graph_roles(tmp_path):
    az = FakeAz(tmp_path)
    result = az.run(posix_hook(), env=hook_env(az))
    assert result.returncode == 0, result.stderr
    (deployment,) = az.calls("deployment", "mg", "create")
    assert deployment[deployment.index("--management-group-id") + 1] == "corp"
    assert deployment[deployment.index("--template-file") + 1] == "infra/management-group-reader.bicep"
    parameters = deployment[deployment.index("--parameters") + 1:deployment.index("--output")]
    assert parameters == [f"principalId={az.principal_id}", "grantLogAnalyticsReader=true"]
    assert len(az.granted()) == 2


@pytest.mark.parametrize(("overrides", "deploys", "grants_graph"), [
    ({"AUDITOR_SKIP_MG_READER": "true"}, False, True),
    ({"AUDITOR_SKIP_GRAPH_ROLES": "true"}, True, False),
    ({"AUDIT_GRAPH": "false"}, True, False),
], ids=["skip-management-group", "skip-graph", "graph-off"])
def test_postprovision_hook_steps_can_be_skipped_independently(tmp_path, overrides, deploys, grants_graph):
    az = FakeAz(tmp_path)
    result = az.run(posix_hook(), env=hook_env(az, **overrides))
    assert result.returncode == 0, result.stderr
    assert bool(az.calls("deployment", "mg", "create")) == deploys
    assert bool(az.calls("rest")) == grants_graph
    assert len(az.granted()) == (2 if grants_graph else 0)


def test_postprovision_hook_passes_container_insights_off_to_the_reader_template(tmp_path):
    az = FakeAz(tmp_path)
    result = az.run(posix_hook(), env=hook_env(az, AUDIT_CONTAINER_INSIGHTS="false"))
    assert result.returncode == 0, result.stderr
    (deployment,) = az.calls("deployment", "mg", "create")
    assert "grantLogAnalyticsReader=false" in deployment


def test_windows_graph_grant_mirrors_the_posix_script():
    """pwsh is not installed here, so the Windows script is only read: same roles, same Graph calls, and the
    existing assignments are read before anything is posted."""
    script = (INFRA / "hooks" / "grant-graph-app-roles.ps1").read_text(encoding="utf-8")
    posix = (INFRA / "hooks" / "grant-graph-app-roles.sh").read_text(encoding="utf-8")
    for text_ in (script, posix):
        assert "'GroupMember.Read.All'" in text_ or "GroupMember.Read.All Application.Read.All" in text_
        assert "Application.Read.All" in text_ and GRAPH_APP_ID in text_
        assert "servicePrincipals(appId=" in text_ and "/appRoleAssignments" in text_
        assert "contains(allowedMemberTypes, 'Application')" in text_
        assert not any(role_id in text_ for role_id in GRAPH_APP_ROLES.values()), "look role ids up by name"
    assert script.index("--method get --url $assignmentsUrl") < script.index("--method post")
    assert "-contains $roleId" in script


# -- the function app ------------------------------------------------------------------------------------------------
@cache
def function_app() -> dict[str, Any]:
    evaluator = module_evaluator("functionApp")
    (instance,) = evaluator.instances("app")
    return instance[1]


def app_settings(app: dict[str, Any] | None = None) -> dict[str, Any]:
    settings = (app or function_app())["properties"]["siteConfig"]["appSettings"]
    names = [s["name"] for s in settings]
    assert len(names) == len(set(names)), "duplicate app settings"
    return {s["name"]: s["value"] for s in settings}


DEPLOYED = {  # what the deployment-time references become
    "dcr.properties.endpoints.logsIngestion": "https://dcr-test.westeurope-1.ingest.monitor.azure.com",
    "dcr.properties.immutableId": "dcr-" + "0123456789abcdef" * 2,
    "account.properties.primaryEndpoints.blob": "https://sttest.blob.core.windows.net/",
    "signingKey.properties.keyUriWithVersion":
        "https://kv-test.vault.azure.net/keys/evidence-manifest-signing/0123456789abcdef0123456789abcdef",
}


def settings_of(app_settings_: dict[str, Any]) -> Settings:
    """The app settings as the app reads them, through its own validation."""
    variables = {variable for variable, _ in Settings.ENVIRONMENT.values()}
    env = {}
    for name, value in app_settings_.items():
        if isinstance(value, Ref):
            value = DEPLOYED.get(".".join(map(str, value.path)), value)
        assert name not in variables or isinstance(value, str), f"{name} = {value}: not modelled"
        env[name] = str(value)
    return Settings.from_env(env)


def test_app_settings_cover_every_setting_the_app_reads():
    variables = {variable for variable, _ in Settings.ENVIRONMENT.values()}
    assert variables >= NOT_IN_AZURE, "NOT_IN_AZURE names a variable Settings no longer reads"
    settings = set(app_settings())
    assert variables - NOT_IN_AZURE <= settings, f"missing: {sorted(variables - NOT_IN_AZURE - settings)}"
    assert settings >= RUNTIME_SETTINGS
    assert not settings & NEVER_SET, f"must not be set in Azure: {settings & NEVER_SET}"
    assert not settings & FLEX_FORBIDDEN, f"Flex Consumption rejects: {settings & FLEX_FORBIDDEN}"


def test_app_settings_pass_the_apps_own_validation():
    settings = settings_of(app_settings())
    assert settings.sink == "log-analytics" and settings.evidence is True
    assert settings.out_dir == "/tmp/acr-pull-audit"
    assert settings.scope == ("tenant",)
    assert settings.schedule == "0 0 */6 * * *" and valid_schedule(settings.schedule)
    streams = {t["stream"] for t in tables_document()["tables"]}
    assert {settings.findings_stream, settings.runs_stream} == streams
    assert settings.storage_account_url == "https://sttest.blob.core.windows.net/"
    assert settings.arm_endpoint.startswith("https://management.azure.com")
    assert settings.graph and settings.deny_assignments and settings.container_insights
    assert settings.exemptions_file == "blob:config/exemptions.yaml"
    assert settings.signing_key_id == DEPLOYED["signingKey.properties.keyUriWithVersion"]
    assert settings.credential_warn_days == 30 and settings.exemption_max_days == 365


def test_app_settings_without_signing_graph_or_container_insights_still_validate():
    caller = Evaluator(MAIN, {**MAIN_PARAMS, "manifestSigning": False, "microsoftGraph": False,
                              "containerInsights": False})
    assert module_params(caller, "signing") == [], "no Key Vault without signing"
    assert caller.eval(caller.file.of("output")["AUDIT_SIGNING_KEY_ID"].value) == ""
    ((_, app),) = module_evaluator("functionApp", caller=caller).instances("app")
    settings = settings_of(app_settings(app))
    assert settings.signing_key_id == "" and not settings.graph and not settings.container_insights


def test_signing_key_setting_is_the_versioned_key_id():
    assert app_settings()["AUDIT_SIGNING_KEY_ID"] == Ref(("signingKey", "properties", "keyUriWithVersion"))


def test_app_settings_reference_the_deployed_resources():
    settings = app_settings()
    # resolved through the module outputs main.bicep passes on: dcr (DCR module), account (storage), identity
    assert settings["LOGS_INGESTION_ENDPOINT"] == Ref(("dcr", "properties", "endpoints", "logsIngestion"))
    assert settings["LOGS_DCR_IMMUTABLE_ID"] == Ref(("dcr", "properties", "immutableId"))
    assert settings["AUDIT_STORAGE_ACCOUNT_URL"] == Ref(("account", "properties", "primaryEndpoints", "blob"))
    assert settings["AZURE_CLIENT_ID"] == settings["AzureWebJobsStorage__clientId"] == Ref(
        ("identity", "properties", "clientId"))
    storage_name = module_evaluator("storage").value("name")
    assert settings["AzureWebJobsStorage__accountName"] == storage_name and storage_name.startswith("st")
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId={{identity.properties.clientId}};Authorization=AAD")
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == Ref(("component", "properties", "ConnectionString"))


def test_audit_scope_follows_the_management_group():
    assert Evaluator(MAIN, MAIN_PARAMS).value("effectiveAuditScope") == "tenant"
    with_mg = Evaluator(MAIN, {**MAIN_PARAMS, "auditManagementGroupId": "corp"})
    assert with_mg.value("effectiveAuditScope") == "mg:corp"
    assert with_mg.value("readerManagementGroupId") == "corp"
    explicit = Evaluator(MAIN, {**MAIN_PARAMS, "auditManagementGroupId": "corp", "auditScope": "sub:1 sub:2"})
    assert explicit.value("effectiveAuditScope") == "sub:1 sub:2"
    assert isinstance(Evaluator(MAIN, MAIN_PARAMS).value("readerManagementGroupId"), Ref)  # tenant().tenantId


def test_function_app_is_flex_consumption_python():
    app = function_app()
    assert app["kind"] == "functionapp,linux"
    config = app["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["scaleAndConcurrency"]["instanceMemoryMB"] == 2048
    assert 40 <= config["scaleAndConcurrency"]["maximumInstanceCount"] <= 100
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer" and storage["value"].endswith("deployment")
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    assert app["properties"]["httpsOnly"] is True
    site = app["properties"]["siteConfig"]
    assert site["minTlsVersion"] == "1.2" and site["ftpsState"] == "Disabled"
    assert "linuxFxVersion" not in site, "Flex Consumption takes the runtime from functionAppConfig"
    assert app["identity"]["type"] == "UserAssigned"
    assert "azd-service-name" in app["tags"] and app["tags"]["azd-service-name"] == "api"
    (plan,) = module_evaluator("functionApp").instances("plan")
    assert plan[1]["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    source = (ROOT / "function_app.py").read_text(encoding="utf-8")
    assert 'schedule="%AUDIT_SCHEDULE%"' in source and "AUDIT_SCHEDULE" in app_settings()
    assert (ROOT / "host.json").exists() and (ROOT / "requirements.txt").exists()


# -- storage, identities, roles --------------------------------------------------------------------------------------
def test_storage_account_is_locked_down_and_evidence_is_worm():
    storage = module_evaluator("storage")
    ((_, account),) = storage.instances("account")
    props = account["properties"]
    assert props["allowSharedKeyAccess"] is False and props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2" and props["supportsHttpsTrafficOnly"] is True
    containers = {body["name"]: body for instances in resources_of_type(
        storage, "Microsoft.Storage/storageAccounts/blobServices/containers").values() for _, body in instances}
    assert set(containers) == {"deployment", "spool", "evidence", "config"}
    assert all(c["properties"]["publicAccess"] == "None" for c in containers.values())
    policies = resources_of_type(
        storage, "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies")
    ((_, policy),) = [i for instances in policies.values() for i in instances]
    assert policy["parent"] == Ref(("evidenceContainer",)) and policy["name"] == "default"
    assert policy["properties"]["immutabilityPeriodSinceCreationInDays"] == 365
    assert policy["properties"]["allowProtectedAppendWrites"] is False
    longer = module_evaluator("storage", {"evidenceRetentionDays": 2555})
    assert longer.instances("evidenceImmutability")[0][1]["properties"]["immutabilityPeriodSinceCreationInDays"] == 2555
    ((_, blob),) = storage.instances("blobService")
    assert blob["properties"]["deleteRetentionPolicy"]["enabled"] is True
    outputs = {n: storage.eval(d.value) for n, d in storage.file.of("output").items()}
    assert outputs["evidenceContainerName"] == "evidence" and outputs["spoolContainerName"] == "spool"
    assert outputs["configContainerName"] == "config", "outside the WORM policy, which holds only `evidence`"


def test_exemption_approvers_may_write_the_config_container_only():
    assert module_evaluator("storage").instances("exemptionApprovers") == [], "nobody without a group"
    caller = Evaluator(MAIN, {**MAIN_PARAMS, "exemptionApproversGroupId": APPROVERS_GROUP})
    ((_, grant),) = module_evaluator("storage", caller=caller).instances("exemptionApprovers")
    assert grant["scope"] == Ref(("configContainer",))
    props = grant["properties"]
    assert props["principalId"] == APPROVERS_GROUP and props["principalType"] == "Group"
    assert props["roleDefinitionId"].rsplit("/", 1)[-1] == ROLE["storage_blob_data_contributor"]


def role_assignments() -> list[tuple[str, dict]]:
    """(file:symbol, evaluated body) of every role assignment: the modules as main.bicep calls them with every
    optional grant on (manifest signing, exemption approvers), and the management-group file."""
    caller = Evaluator(MAIN, {**MAIN_PARAMS, "manifestSigning": True, "exemptionApproversGroupId": APPROVERS_GROUP})
    evaluators = [module_evaluator(name, caller=caller) for name in bicep(MAIN).of("module")]
    evaluators.append(Evaluator(INFRA / "management-group-reader.bicep", {"principalId": "p"}))
    found = []
    for evaluator in evaluators:
        for name, instances in resources_of_type(evaluator, "Microsoft.Authorization/roleAssignments").items():
            found += [(f"{evaluator.file.path.name}:{name}", body) for _, body in instances]
    declared = sum(1 for p in BICEP_FILES for d in bicep(p).of("resource").values()
                   if d.type.startswith("Microsoft.Authorization/roleAssignments@"))
    assert len(found) == declared, "a role assignment outside the evaluated modules"
    return found


def test_role_assignments_are_least_privilege():
    granted = set()
    for where, body in role_assignments():
        assert body["name"] == Ref(("guid()",)), f"{where}: name it with guid()"
        principal = body["properties"]["principalId"]
        if principal == APPROVERS_GROUP:
            assert body["properties"]["principalType"] == "Group", where
        else:
            assert body["properties"]["principalType"] == "ServicePrincipal", where
            assert principal in (Ref(("identity", "properties", "principalId")), "p"), where
        role = body["properties"]["roleDefinitionId"].rsplit("/", 1)[-1]
        scope = body.get("scope")
        granted.add((where.split(":")[0], role, ".".join(scope.path) if isinstance(scope, Ref) else scope))
    assert granted == {
        ("data-collection-rule.bicep", ROLE["monitoring_metrics_publisher"], "dcr"),
        ("app-insights.bicep", ROLE["monitoring_metrics_publisher"], "component"),
        ("storage.bicep", ROLE["storage_blob_data_owner"], "account"),
        ("storage.bicep", ROLE["storage_blob_data_contributor"], "configContainer"),
        ("key-vault.bicep", ROLE["key_vault_crypto_user"], "signingKey"),
        ("management-group-reader.bicep", ROLE["reader"], None),
        ("management-group-reader.bicep", ROLE["log_analytics_reader"], None),
    }
    for path in BICEP_FILES:  # no broad role anywhere: Owner, Contributor, User Access Administrator
        source = path.read_text(encoding="utf-8")
        for broad in ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "b24988ac-6180-42a0-ab88-20f7382dd24c",
                      "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"):
            assert broad not in source, f"{path.name} grants a broad role"


def test_reader_and_log_analytics_reader_are_granted_at_the_management_group():
    evaluator = Evaluator(INFRA / "management-group-reader.bicep", {"principalId": "p"})
    for symbol, role in (("reader", ROLE["reader"]), ("logAnalyticsReader", ROLE["log_analytics_reader"])):
        ((_, assignment),) = evaluator.instances(symbol)
        # tenantResourceId: a role definition id valid at management-group scope; no `scope`: the deployment's MG
        assert assignment["properties"]["roleDefinitionId"] == (
            f"/providers/Microsoft.Authorization/roleDefinitions/{role}")
        assert assignment["properties"]["principalType"] == "ServicePrincipal" and "scope" not in assignment
    without = Evaluator(INFRA / "management-group-reader.bicep", {"principalId": "p", "grantLogAnalyticsReader": False})
    assert without.instances("logAnalyticsReader") == [] and without.instances("reader")
    assert without.eval(without.file.of("output")["logAnalyticsReaderAssignmentId"].value) == ""


# -- evidence signing key ------------------------------------------------------------------------------------------
def test_signing_vault_is_rbac_only_purge_protected_and_audited():
    signing = module_evaluator("signing")
    ((_, vault),) = signing.instances("vault")
    props = vault["properties"]
    assert vault["name"].startswith("kv-") and len(vault["name"]) <= 24
    assert props["enableRbacAuthorization"] is True and "accessPolicies" not in props
    assert props["enablePurgeProtection"] is True and props["enableSoftDelete"] is True
    assert props["softDeleteRetentionInDays"] == 90
    assert not (props["enabledForDeployment"] or props["enabledForDiskEncryption"]
                or props["enabledForTemplateDeployment"])
    ((_, account),) = module_evaluator("storage").instances("account")
    # the same network exposure as the storage account the app also reaches without VNet integration
    assert props["publicNetworkAccess"] == account["properties"]["publicNetworkAccess"] == "Enabled"
    assert props["networkAcls"] == account["properties"]["networkAcls"]
    ((_, audit),) = signing.instances("auditLog")
    assert audit["scope"] == Ref(("vault",))
    assert audit["properties"]["workspaceId"] == Ref(("createdWorkspace", "id"))
    assert audit["properties"]["logs"] == [{"categoryGroup": "audit", "enabled": True}]
    assert audit["properties"]["logAnalyticsDestinationType"] == "Dedicated"


def test_signing_key_is_ec_p256_for_sign_and_verify_only():
    signing = module_evaluator("signing")
    ((_, key),) = signing.instances("signingKey")
    assert key["parent"] == Ref(("vault",))
    assert {k: key["properties"][k] for k in ("kty", "curveName", "keyOps")} == {
        "kty": "EC", "curveName": "P-256", "keyOps": ["sign", "verify"]}
    output = signing.eval(signing.file.of("output")["signingKeyId"].value)
    assert output == Ref(("signingKey", "properties", "keyUriWithVersion")), "sign with one pinned key version"


def test_only_the_auditor_may_use_the_signing_key():
    signing = module_evaluator("signing")
    assignments = resources_of_type(signing, "Microsoft.Authorization/roleAssignments")
    assert list(assignments) == ["signer"], "no other principal gets a role on the vault"
    ((_, signer),) = assignments["signer"]
    assert signer["scope"] == Ref(("signingKey",)), "on the key, not the vault"
    assert signer["properties"]["principalId"] == Ref(("identity", "properties", "principalId"))
    assert signer["properties"]["roleDefinitionId"].rsplit("/", 1)[-1] == ROLE["key_vault_crypto_user"]


def test_manifest_signing_is_on_by_default_and_can_be_turned_off():
    assert main().value("manifestSigning") is True
    assert len(module_params(main(), "signing")) == 1
    off = Evaluator(MAIN, {**MAIN_PARAMS, "manifestSigning": False})
    assert module_params(off, "signing") == []
    (params,) = module_params(off, "functionApp")
    assert params["signingKeyId"] == ""


# -- tables and the data collection rule -----------------------------------------------------------------------------
def test_tables_come_from_the_json_schema_file():
    assert ("loadJsonContent", TABLES_JSON.resolve()) in loads(MAIN)
    assert main().value("schema") == tables_document()
    # no column list typed in Bicep: no object literal with a name and a column type
    column_types = {"string", "int", "long", "real", "boolean", "bool", "datetime", "dynamic", "guid"}
    for path in BICEP_FILES:
        for node in walk(bicep(path).root):
            if node.type == "object":
                props = properties(node)
                kind = props.get("type")
                if "name" in props and kind is not None and (literal(kind) or "").lower() in column_types:
                    raise AssertionError(f"{path.name}:{node.start_point[0] + 1}: a typed column in Bicep")


def test_tables_are_created_with_the_table_type_spelling():
    analytics = module_evaluator("logAnalytics")
    tables = {}
    for params in module_params(analytics, "table"):
        table = Evaluator(MODULES / "log-analytics-table.bicep", params)
        ((_, body),) = table.instances("table")
        tables[body["name"]] = body["properties"]
    assert set(tables) == set(table_schemas())
    for name, columns in table_schemas().items():
        schema = tables[name]["schema"]
        assert schema["name"] == name and tables[name]["plan"] == "Analytics"
        expected = [{"name": c, "type": "dateTime" if t == "datetime" else t} for c, t in columns.items()]
        assert schema["columns"] == expected


def test_workspace_can_be_new_or_existing():
    created = Evaluator(MODULES / "log-analytics.bicep", {**module_params(main(), "logAnalytics")[0]})
    assert created.instances("createdWorkspace")
    existing_id = "/subscriptions/s2/resourceGroups/rg-shared/providers/Microsoft.OperationalInsights/workspaces/law"
    shared = Evaluator(MAIN, {**MAIN_PARAMS, "existingWorkspaceResourceId": existing_id})
    (params,) = module_params(shared, "logAnalytics")
    assert params["createWorkspace"] is False and params["name"] == "law"
    assert shared.value("workspaceSubscriptionId") == "s2" and shared.value("workspaceResourceGroupName") == "rg-shared"
    assert not Evaluator(MODULES / "log-analytics.bicep", params).instances("createdWorkspace")


@cache
def data_collection_rule() -> dict[str, Any]:
    evaluator = module_evaluator("dataCollectionRule")
    ((_, dcr),) = evaluator.instances("dcr")
    return dcr


def test_dcr_declares_every_stream_and_routes_it_to_its_table():
    dcr = data_collection_rule()
    assert dcr["kind"] == "Direct" and "dataCollectionEndpointId" not in dcr["properties"]
    declared = dcr["properties"]["streamDeclarations"]
    document = tables_document()["tables"]
    assert declared == {t["stream"]: {"columns": t["columns"]} for t in document}
    destinations = {d["name"] for d in dcr["properties"]["destinations"]["logAnalytics"]}
    flows = dcr["properties"]["dataFlows"]
    assert len(flows) == len(document)
    outputs = set()
    for flow in flows:
        assert set(flow["streams"]) <= set(declared), flow["streams"]
        assert set(flow["destinations"]) <= destinations
        assert flow["outputStream"].startswith("Custom-")
        outputs.add(flow["outputStream"].removeprefix("Custom-"))
    assert outputs == set(table_schemas()), "every flow lands in a table the template creates"
    evaluator = module_evaluator("dataCollectionRule")
    out = {n: evaluator.eval(d.value) for n, d in evaluator.file.of("output").items()}
    assert out["findingsStream"] == "Custom-AcrPullAudit" and out["runsStream"] == "Custom-AcrPullAuditRuns"


# -- alerts ----------------------------------------------------------------------------------------------------------
@cache
def alert_rules() -> dict[str, dict[str, Any]]:
    evaluator = module_evaluator("alerts", {"ownerActionGroups": OWNERS})
    rules = {}
    for name, instances in resources_of_type(evaluator, "Microsoft.Insights/scheduledQueryRules").items():
        for scope, body in instances:
            rules[f"{name}[{scope.get('i', '')}]"] = body
    return rules


def test_alert_queries_are_files_the_module_loads():
    files = {p.resolve() for p in (INFRA / "alerts").glob("*.kql")}
    assert files and files == {target for _, target in loads(MODULES / "alerts.bicep")}
    queries = {r["properties"]["criteria"]["allOf"][0]["query"] for r in alert_rules().values()}
    assert queries == {p.read_text(encoding="utf-8") for p in files}


def test_alert_rules_are_log_alerts_on_the_workspace():
    for name, rule in alert_rules().items():
        assert rule["kind"] == "LogAlert", name
        assert rule["properties"]["scopes"] == [Ref(("createdWorkspace", "id"))], name
        assert rule["properties"]["actions"]["actionGroups"], name


OWNER_ROUTED = {"ownerHighFail": "unmappedHighFail", "ownerObservedPullFailures": "unmappedObservedPullFailures"}
SECURITY_TEAM = [Ref(("securityTeam",)).then("id")]


@pytest.mark.parametrize(("per_owner", "catch_all"), OWNER_ROUTED.items(), ids=list(OWNER_ROUTED))
def test_owner_routed_alerts_go_to_each_owner_and_the_rest_to_the_security_team(per_owner, catch_all):
    rules = alert_rules()
    owner_rules = [rules[f"{per_owner}[{i}]"] for i in range(len(OWNERS))]
    queries = {r["properties"]["criteria"]["allOf"][0]["query"] for r in [*owner_rules, rules[f"{catch_all}[]"]]}
    assert len(queries) == 1, "the owner rules and their catch-all run the same query"
    for i, (owner, rule) in enumerate(zip(OWNERS, owner_rules, strict=True)):
        criterion = rule["properties"]["criteria"]["allOf"][0]
        assert criterion["dimensions"] == [{"name": "Owner", "operator": "Include", "values": [owner["owner"]]}]
        assert rule["properties"]["actions"]["actionGroups"] == [Ref(("ownerGroups", [i], "id"))]
    rest = rules[f"{catch_all}[]"]["properties"]
    assert rest["criteria"]["allOf"][0]["dimensions"] == [
        {"name": "Owner", "operator": "Exclude", "values": [o["owner"] for o in OWNERS]}]
    assert rest["actions"]["actionGroups"] == SECURITY_TEAM
    evaluator = module_evaluator("alerts", {"ownerActionGroups": []})
    ((_, alone),) = evaluator.instances(catch_all)
    assert alone["properties"]["criteria"]["allOf"][0]["dimensions"] == [
        {"name": "Owner", "operator": "Include", "values": ["*"]}]
    assert evaluator.instances(per_owner) == []


def test_owner_action_groups_are_one_per_owner():
    groups = module_evaluator("alerts", {"ownerActionGroups": OWNERS}).instances("ownerGroups")
    assert [g["properties"]["emailReceivers"][0]["emailAddress"] for _, g in groups] == [o["email"] for o in OWNERS]
    assert all(len(g["properties"]["groupShortName"]) <= 12 for _, g in groups)


def test_silence_alert_fires_on_zero_rows():
    rule = alert_rules()["noSuccessfulRun[]"]["properties"]
    assert rule["windowSize"] == "PT12H", "two schedule periods of 6 hours"
    hours = main().value("auditSchedule").split()[2]
    assert hours == f"*/{main().value('schedulePeriodHours')}", "the default schedule and its period disagree"
    criterion = rule["criteria"]["allOf"][0]
    assert (criterion["operator"], criterion["threshold"]) == ("LessThan", 1)
    # The last stage is a `summarize` without `by`: Kusto returns exactly one row for it, also over no input,
    # so the rule sees SucceededRuns = 0 instead of no result.
    stages = [s.strip() for s in _code(criterion["query"]).split("|")]
    assert stages[-1].startswith("summarize ") and " by " not in stages[-1], stages[-1]
    assert criterion["metricMeasureColumn"] in stages[-1]
    assert "dimensions" not in criterion


def _code(query: str) -> str:
    return "\n".join(line.split("//")[0] for line in query.splitlines())


def alert_query(name: str) -> str:
    """The KQL of a rule, without comments (so that a comment cannot satisfy a test)."""
    return _code(alert_rules()[name]["properties"]["criteria"]["allOf"][0]["query"])


# A run's status is its run row with the latest TimeGenerated (the row written ahead to say the run was interrupted
# is dated at its start and gives way to the real one), and that row's first arrival is when the run counts.
RUN_RECORD = ("| extend Ingested = ingestion_time()\n"
              "    | summarize arg_min(Ingested, RunStatus) by RunId, TimeGenerated\n"
              "    | summarize arg_max(TimeGenerated, RunStatus, Ingested) by RunId\n")
# Findings alerts read runs that finished, and a finding counts once, in the hour when both it and its run's row have
# arrived: neither a run row nor a chunk of findings delivered late from the spool loses an alert.
FINISHED_RUNS = "let finishedRuns = AcrPullAuditRuns_CL\n    " + RUN_RECORD + \
    '    | where RunStatus in ("Succeeded", "Incomplete")\n    | project RunId, RunArrived = Ingested;\n'
FINDING_ARRIVED = "summarize arg_max(TimeGenerated, *), Arrived = min(Ingested) by RunId, FindingId"
READY = "| where max_of(Arrived, RunArrived) > ago(1h)"
FINDINGS_ALERTS = ("unmappedHighFail[]", "unmappedObservedPullFailures[]", "exemptionExpired[]")


@pytest.mark.parametrize("name", FINDINGS_ALERTS)
def test_findings_alerts_read_finished_runs_once_their_rows_arrived(name):
    query = alert_query(name)
    assert FINISHED_RUNS in query, name
    assert "where RunId in ((finishedRuns | project RunId))" in query, name
    assert "extend Ingested = ingestion_time()" in query.split(FINISHED_RUNS, 1)[1], "the findings' own arrival"
    assert FINDING_ARRIVED in query and "join kind=inner finishedRuns on RunId" in query, name
    assert READY in query, name
    # not "the runs that did not fail", row by row: a run's status is the one of its latest run row
    assert 'RunStatus != "Failed"' not in query, name
    assert query.index(READY) < query.index('Change == "New"'), "only findings that just became ready"


def test_new_failure_alerts_read_the_change_column_and_skip_exemptions():
    for name in ("unmappedHighFail[]", "unmappedObservedPullFailures[]"):
        query = alert_query(name)
        assert 'Change == "New"' in query, name
        assert "where coalesce(Exempted, false) == false" in query, name
        assert "previousRunId" not in query and "top 2" not in query and "prev(" not in query, \
            "no re-derivation from two runs"
        assert not re.search(r"join [^\n]* on [^\n]*FindingId", query), "no join of runs by finding"
    # New problems are Fail or Unknown (the auditor's NewCount counts both); a carried-forward finding is never New
    # (nobody looked), and is left out even if a row said otherwise.
    high = alert_query("unmappedHighFail[]")
    assert '| where Change == "New" and Status in ("Fail", "Unknown") and Severity in ("High", "Critical")\n' in high
    assert "| where coalesce(tobool(Evidence.carriedForward), false) == false\n" in high
    # observed pull failures: only a Fail carries kubelet events
    assert '| where Change == "New" and Status == "Fail"\n' in alert_query("unmappedObservedPullFailures[]")


def test_high_fail_alert_uses_the_pull_verdict_instead_of_its_checks():
    query = alert_query("unmappedHighFail[]")
    assert 'Severity in ("High", "Critical")' in query
    # AKS-ACR-000 alerts; the checks it lists in Evidence.checks do not alert on their own, AKS-ACR-002 has its own
    # rule, and other High rules (registry posture) still do.
    assert 'where RuleId == "AKS-ACR-000" or (RuleId != "AKS-ACR-002" and RuleId !in (verdictChecks))' in query
    assert "mv-expand Check = Evidence.checks" in query and "tostring(Check.rule)" in query


def test_observed_failure_alert_counts_the_access_classes_only():
    query = alert_query("unmappedObservedPullFailures[]")
    assert 'RuleId == "AKS-ACR-002"' in query
    (classes,) = re.findall(r"let accessClasses = dynamic\((\[.*?\])\);", query)
    assert set(json.loads(classes)) == {"Unauthorized", "Forbidden", "NameResolution", "Unreachable"}
    assert "bag_keys(Evidence.classes)" in query and "where AccessEvents > 0" in query


@pytest.mark.parametrize(("rule", "reads"), [
    ("exemptionExpired[]", ['RuleId == "AKS-ACR-013"', 'Change == "New"', "Evidence.exemptionId"]),
    ("quarantinedSpool[]", ["QuarantinedSpoolEntries > 0", "FirstIngested > ago(1h)"]),
    ("runFailed[]", ['| where RunStatus == "Failed" and not(tostring(Errors[0]) startswith "interrupted")\n',
                     "| where Ingested > ago(1h)\n"]),
    ("runInterrupted[]", ['| where RunStatus == "Failed" and tostring(Errors[0]) startswith "interrupted"\n',
                          "| where Ingested > ago(1h)\n"]),
    # the first row ingested is a run's record; a fork or a second hash for one run is a break as well
    ("evidenceChainBroken[]", ["ChainPosition = ChainPosition + 1", "PreviousManifestSha256 != PredecessorManifest",
                               "join kind=inner predecessors on Scope, ChainPosition", "Runs > 1",
                               "arg_min(Ingested, Scope, ChainPosition", "Hashes > 1"]),
])
def test_security_team_alerts(rule, reads):
    properties = alert_rules()[rule]["properties"]
    assert properties["actions"]["actionGroups"] == SECURITY_TEAM
    query = alert_query(rule)
    assert all(fragment in query for fragment in reads), [f for f in reads if f not in query]
    criterion = properties["criteria"]["allOf"][0]
    assert (criterion["operator"], criterion["threshold"]) == ("GreaterThan", 0)
    stages = [stage.strip() for stage in query.split("\n| ")]
    if "dimensions" not in criterion:  # one row, also over no input: the rule compares a number, never "no rows"
        assert stages[-1].startswith("summarize ") and " by " not in stages[-1], stages[-1]


@pytest.mark.parametrize("rule", ["runFailed[]", "runInterrupted[]"])
def test_run_alerts_read_each_runs_latest_row(rule):
    """A failed run and an interrupted one alert apart, each once: the status is the run's latest row, first
    arrived within the hour, so an interrupted row that a real row superseded does not alert."""
    query = alert_query(rule)
    record = ("| extend Ingested = ingestion_time()\n"
              "| summarize arg_min(Ingested, RunStatus, Errors) by RunId, TimeGenerated\n"
              "| summarize arg_max(TimeGenerated, RunStatus, Errors, Ingested) by RunId\n")
    assert record in query
    assert query.index(record) < query.index('| where RunStatus == "Failed"')


def test_interrupted_runs_are_recognised_by_what_the_auditor_writes():
    """The run row a run writes ahead, which a later run delivers when the run never finished, is what the
    interrupted-run alert and the workbook look for."""
    source = (ROOT / "auditors" / "pipeline.py").read_text(encoding="utf-8")
    assert re.search(r'RunStatus=FAILED,[^\n]*\n[^\n]*Errors=\["interrupted: ', source), \
        "the write-ahead run row changed: update run-interrupted.kql, run-failed.kql and the workbook"
    rule = alert_rules()["runInterrupted[]"]["properties"]
    assert rule["actions"]["actionGroups"] == SECURITY_TEAM and rule["autoMitigate"] is False


def test_expired_exemption_alert_names_the_exemption():
    criterion = alert_rules()["exemptionExpired[]"]["properties"]["criteria"]["allOf"][0]
    assert criterion["dimensions"] == [{"name": "ExemptionId", "operator": "Include", "values": ["*"]}]


# -- workbook --------------------------------------------------------------------------------------------------------
def workbook() -> dict:
    return json.loads(WORKBOOK_JSON.read_text(encoding="utf-8"))


def workbook_items(items: list[dict]):
    for item in items:
        yield item
        if item["type"] == 12:
            yield from workbook_items(item["content"]["items"])


def workbook_queries() -> dict[str, str]:
    """name -> KQL of every query item and parameter query."""
    queries = {}
    for item in workbook_items(workbook()["items"]):
        if item["type"] == 3:
            queries[item["name"]] = item["content"]["query"]
        if item["type"] == 9:
            for parameter in item["content"]["parameters"]:
                if parameter.get("query"):
                    queries[f"{item['name']}.{parameter['name']}"] = parameter["query"]
    return queries


def declared_workbook_parameters() -> dict[str, dict]:
    declared = {}
    for item in workbook_items(workbook()["items"]):
        if item["type"] == 9:
            declared.update({p["name"]: p for p in item["content"]["parameters"]})
        if item["type"] == 11:
            declared.update({link["cellValue"]: {"type": "link"} for link in item["content"]["links"]})
        if item["type"] == 3 and item["content"].get("exportParameterName"):
            declared[item["content"]["exportParameterName"]] = {"type": "export"}
    return declared


def substitute(query: str) -> str:
    """Expand workbook parameters the way the workbook does, with harmless values."""
    declared = declared_workbook_parameters()

    def value(match: re.Match) -> str:
        name, part = match.group(1), match.group(2)
        parameter = declared[name]
        if parameter.get("type") == 4:
            return {None: "> ago(1d)", "start": "datetime(2026-01-01)", "end": "datetime(2026-01-02)",
                    "grain": "1h"}[part]
        if parameter.get("multiSelect"):
            return f"{parameter.get('quote', '')}x{parameter.get('quote', '')}"
        return "x"

    return re.sub(r"\{(\w+)(?::(\w+))?\}", value, query)


def test_workbook_is_structurally_valid():
    document = workbook()
    assert document["version"] == "Notebook/1.0"
    items = list(workbook_items(document["items"]))
    names = [item["name"] for item in items]
    assert len(names) == len(set(names)), "item names must be unique"
    assert {item["type"] for item in items} <= {1, 3, 9, 11, 12}
    declared = declared_workbook_parameters()
    assert {"TimeRange", "Subscription", "Owner", "Severity", "Rule"} <= set(declared)
    for name in ("Subscription", "Owner", "Severity", "Rule"):
        parameter = declared[name]
        assert parameter["multiSelect"] and parameter["typeSettings"]["additionalResourceOptions"] == ["value::all"]
        assert parameter["typeSettings"]["selectAllValue"] == "*"
    for item in items:
        if item["type"] == 3:
            assert item["content"]["version"] == "KqlItem/1.0"
            assert item["content"]["queryType"] == 0 and item["content"]["resourceType"] == LA_RESOURCE_TYPE
        if item["type"] == 9:
            for parameter in item["content"]["parameters"]:
                if "query" in parameter:
                    assert parameter["queryType"] == 0 and parameter["resourceType"] == LA_RESOURCE_TYPE
        for reference in (item.get("conditionalVisibility", {}).get("parameterName"),
                          item.get("content", {}).get("timeContextFromParameter")):
            assert reference is None or reference in declared, f"{item['name']}: {reference} is not declared"
    for name, query in workbook_queries().items():
        for parameter in re.findall(r"\{(\w+)(?::\w+)?\}", query):
            assert parameter in declared, f"{name}: {{{parameter}}} is not declared"
    assert not re.search(r"\{\w+(:\w+)?\}", "".join(substitute(q) for q in workbook_queries().values()))


TABS = ["overview", "matrix", "findings", "observed", "exemptions", "controls", "changes", "runs", "auditor"]


def test_workbook_tabs_each_show_a_group():
    items = list(workbook_items(workbook()["items"]))
    (tabs,) = [i for i in items if i["type"] == 11]
    targets = [link["subTarget"] for link in tabs["content"]["links"]]
    shown = [i["conditionalVisibility"]["value"] for i in items if i["type"] == 12 and "conditionalVisibility" in i]
    assert targets == shown == TABS


def query_items(tab: str | None = None) -> dict[str, str]:
    """name -> KQL of the query items (of one tab)."""
    groups = [i for i in workbook()["items"] if i["type"] == 12 and (tab is None or i["name"] == tab)]
    return {i["name"]: i["content"]["query"] for g in groups for i in workbook_items(g["content"]["items"])
            if i["type"] == 3}


def pinned_rules(query: str) -> list[str]:
    """Rules a findings query is restricted to before it de-duplicates."""
    return re.findall(r'\| where RuleId == "(AKS-ACR-\d{3})"\n'
                      r'\| summarize arg_max\(TimeGenerated, \*\) by RunId, FindingId', query)


# Current state ("latest run"): the run whose latest run row says Succeeded or Incomplete, newest by StartTime,
# among the runs with findings in the workspace. A run that failed or was interrupted never hides the findings
# (carried-forward Unknowns included) of the one before it, and neither does a run whose findings have not arrived.
LATEST_RUN = """let lastRunId = toscalar(AcrPullAuditRuns_CL
    | where TimeGenerated {TimeRange}
    | summarize arg_max(TimeGenerated, RunStatus, StartTime) by RunId
    | where RunStatus in ("Succeeded", "Incomplete")
    | where RunId in ((AcrPullAudit_CL | where TimeGenerated {TimeRange} | distinct RunId))
    | top 1 by StartTime desc
    | project RunId);
"""
# Trends: every run that finished, by the status of its latest run row.
EVERY_FINISHED_RUN = """let finishedRuns = AcrPullAuditRuns_CL
    | where TimeGenerated {TimeRange}
    | summarize arg_max(TimeGenerated, RunStatus, StartTime) by RunId
    | where RunStatus in ("Succeeded", "Incomplete");
"""
# Views about runs that read findings only to count what a run delivered.
RUN_VIEWS = {"current-run", "runs-interrupted"}
NOT_COLLECTED = "Unknown (not collected)"
IS_CARRIED = "IsCarried = coalesce(tobool(Evidence.carriedForward), isnotempty(LastKnownStatus))"


def test_workbook_findings_queries_deduplicate_and_read_finished_runs():
    """Current state: the latest finished run with findings (lastRunId). Trends: every finished run
    (finishedRuns). The filters apply everywhere, except Severity and Rule on a tab about one rule."""
    for name, query in query_items().items():
        if "AcrPullAudit_CL" not in query.replace(LATEST_RUN, "") or name in RUN_VIEWS:
            continue
        assert "summarize arg_max(TimeGenerated, *) by RunId, FindingId" in query, name
        latest = "| where RunId == lastRunId\n" in query
        every_run = "| where RunId in ((finishedRuns | project RunId))\n" in query
        assert latest != every_run, f"{name}: the latest finished run or every finished run"
        assert query.startswith(LATEST_RUN if latest else EVERY_FINISHED_RUN), name
        if "{SelectedFinding}" in query:
            continue
        filters = [("Subscription", "SubscriptionId"), ("Owner", "Owner")]
        if not pinned_rules(query):
            filters += [("Severity", "Severity"), ("Rule", "RuleId")]
        for parameter, column in filters:
            assert f"'*' in ({{{parameter}}}) or {column} in ({{{parameter}}})" in query, (name, parameter)


def test_workbook_current_state_is_the_latest_finished_run_with_findings():
    """Never "the last run that did not fail" row by row: every view of the latest run selects it the same way,
    and every status filter on runs reads the status of each run's latest row."""
    latest = {name: query for name, query in query_items().items() if "lastRunId" in query}
    assert {"pass-rate-rule", "pair-matrix", "findings-table", "changes-new", "changes-fixed", "current-run",
            "carried-forward", "exemptions-state"} <= set(latest)
    for name, query in latest.items():
        assert query.startswith(LATEST_RUN), name
    selection = LATEST_RUN.splitlines()
    assert selection.index('    | where RunStatus in ("Succeeded", "Incomplete")') > selection.index(
        "    | summarize arg_max(TimeGenerated, RunStatus, StartTime) by RunId"), "status of each run's latest row"
    assert "distinct RunId))" in selection[4] and "AcrPullAudit_CL" in selection[4], "a run with findings"
    for name, query in workbook_queries().items():
        assert 'RunStatus != "Failed"' not in query, name
        for match in re.finditer(r'\| where RunStatus in \("Succeeded", "Incomplete"\)', query):
            before = query[:match.start()].rstrip().splitlines()[-1].strip()
            assert re.fullmatch(r"\| summarize arg_max\(TimeGenerated, [\w, *]+\) by RunId", before), (name, before)


def test_workbook_shows_carried_forward_findings_apart_from_unknown(workbook_results):
    """A finding the latest run could not collect is not a plain Unknown: it shows as "Unknown (not collected)",
    with the status it had and when it was last collected, and the status icons know that value."""
    views = {"findings-table": ("Status", "WasStatus"), "changes-latest-list": ("Status", "WasStatus"),
             "exempted-findings": ("Status", "WasStatus"), "carried-forward": ("Status", "WasStatus"),
             "pair-matrix": ("Verdict", "WasVerdict")}
    items = {i["name"]: i for i in workbook_items(workbook()["items"])}
    for name, (status, was) in views.items():
        query = items[name]["content"]["query"]
        assert f'"{NOT_COLLECTED}"' in query and IS_CARRIED in query, name
        assert {status, was, "LastCollected"} <= set(result_columns(workbook_results[name])), name
        formatters = items[name]["content"]["gridSettings"]["formatters"]
        (icons,) = [f for f in formatters if f["columnMatch"] == status] or [None]
        if icons is not None:
            assert NOT_COLLECTED in [t["thresholdValue"] for t in icons["formatOptions"]["thresholdsGrid"]], name
    # counted apart, and a pair that was failing when last collected stays visible with its root cause
    for name in ("pass-rate-rule", "pass-rate-subscription", "pass-rate-owner", "controls-latest",
                 "changes-latest-summary", "matrix-summary"):
        assert "CarriedForward = countif(IsCarried and not(IsExempted))" in query_items()[name], name
    root_causes = query_items("matrix")["root-causes"]
    assert '| where Status == "Fail" or LastKnownStatus == "Fail"\n' in root_causes
    assert 'WasFail = countif(IsCarried and LastKnownStatus == "Fail" and not(IsExempted))' in root_causes


def test_workbook_changes_come_from_the_change_column():
    """New problems and fixes are the auditor's Change column of the latest run; nothing joins two runs. A row
    does not say which status it changed from, so the fixed count is the run's FixedCount."""
    changes = query_items("changes")
    for name, query in changes.items():
        assert "join" not in query and "prev(" not in query and "top 2" not in query, name
    assert '| where Change == "New" and Status in ("Fail", "Unknown")\n| where coalesce(Exempted, false) == false\n' \
        in changes["changes-new"]
    assert '| where Change == "Changed" and Status in ("Pass", "NotApplicable")\n' in changes["changes-fixed"]
    counts = changes["changes-latest-counts"]
    assert 'NewProblems = countif(Change == "New" and Status in ("Fail", "Unknown") and not(IsExempted))' in counts
    assert "summarize arg_max(TimeGenerated, FixedCount)" in counts and "Fixed = fixedInRun" in counts
    assert "where RunId == lastRunId" in counts.split("let fixedInRun", 1)[1], "the latest run's own FixedCount"
    assert "New = NewCount, Fixed = FixedCount" in changes["changes-per-run"]


def test_workbook_run_health_shows_interrupted_runs_and_quarantined_entries():
    runs = query_items("runs")
    interrupted = 'RunStatus == "Failed" and tostring(Errors[0]) startswith "interrupted"'
    for name in ("runs-attention", "runs-interrupted", "runs-table", "runs-status"):
        assert interrupted in runs[name], name
    assert "Interrupted = countif(IsInterrupted)" in runs["runs-attention"]
    assert 'Failed = countif(RunStatus == "Failed" and not(IsInterrupted))' in runs["runs-attention"]
    assert "QuarantinedSpoolEntries = sum(QuarantinedSpoolEntries)" in runs["runs-attention"]
    assert "| where QuarantinedSpoolEntries > 0\n" in runs["runs-quarantine"]
    for name, query in runs.items():
        if "AcrPullAuditRuns_CL" in query:
            assert "summarize arg_max(TimeGenerated, *) by RunId" in query, f"{name}: one row per run"


def test_workbook_counts_exclude_exempted_findings():
    """A count of a status (Fail = countif(Status == "Fail" ...)) leaves exempted findings out, unless it is a
    count of exempted findings."""
    for name, query in query_items().items():
        for column, status, rest in re.findall(r'(\w+) = countif\(Status == "(\w+)"([^)]*\)?)', query):
            if column.startswith("Exempted"):
                continue
            assert "and not(IsExempted)" in rest, f"{name}: {column} counts exempted {status} findings"


def test_workbook_resource_loads_the_json_and_names_the_workspace():
    workbook_module = Evaluator(MODULES / "workbook.bicep", {"workspaceResourceId": "/subscriptions/s/x/law",
                                                             "location": "westeurope", "tags": {}})
    ((_, resource),) = workbook_module.instances("workbook")
    props = resource["properties"]
    assert props["category"] == "workbook" and resource["kind"] == "shared" and props["version"] == "Notebook/1.0"
    assert props["sourceId"] == "/subscriptions/s/x/law"
    assert json.loads(props["serializedData"])["fallbackResourceIds"] == ["/subscriptions/s/x/law"]
    assert isinstance(resource["name"], Ref) and resource["name"].path == ("guid()",)
    assert len(WORKBOOK_JSON.read_text(encoding="utf-8")) < 131072, "loadTextContent reads at most 131,072 characters"


# -- KQL -------------------------------------------------------------------------------------------------------------
KQL_REASON = kusto.available()


@pytest.fixture(scope="module")
def kql():
    if KQL_REASON:
        if os.environ.get("CI_REQUIRE_KQL"):
            pytest.fail(f"KQL validation required but unavailable: {KQL_REASON}")
        pytest.skip(KQL_REASON)
    return kusto


@pytest.fixture(scope="module")
def workbook_results(kql) -> dict[str, dict]:
    return kql.analyse(table_schemas(), {name: substitute(q) for name, q in workbook_queries().items()})


def result_columns(result: dict) -> list[str]:
    return [c.split(":", 1)[0] for c in result["columns"]]


def test_workbook_queries_are_valid_kql(kql, workbook_results):
    problems = {name: kql.errors(result) for name, result in workbook_results.items() if kql.errors(result)}
    assert problems == {}


# What each view must show, by the columns it returns.
WORKBOOK_VIEWS = {
    # one verdict per pair, by ids, with its root cause; a pair not collected shows what it was and since when
    "pair-matrix": {"Cluster", "Registry", "Verdict", "RootCause", "BlockingChecks", "WasVerdict", "LastCollected",
                    "ExemptionId", "ClusterId", "RegistryId"},
    "matrix-summary": {"Pass", "Fail", "Unknown", "CarriedForward", "WasFail", "Exempted"},
    "root-causes": {"RootCause", "Fail", "WasFail", "Exempted"},
    # the run every "latest run" view reads, with how many of its findings reached the workspace
    "current-run": {"StartTime", "RunStatus", "Findings", "Delivered", "CarriedForward", "New", "Fixed", "RunId"},
    "carried-forward": {"Status", "WasStatus", "LastCollected", "Since"},
    "findings-table": {"Status", "Exemption", "WasStatus", "LastCollected", "Change", "Since", "Controls", "FindingId"},
    "observed-by-class": {"Class", "Events", "Pairs", "ExemptedEvents", "ExemptedPairs"},
    "observed-by-cluster": {"ClusterId", "Cluster", "Events", "Classes", "LastObserved", "ExemptedRegistries"},
    "observed-by-registry": {"RegistryId", "Registry", "Events", "Classes", "LastObserved", "ExemptedClusters"},
    "observed-trend": {"StartTime", "Series", "Events"},
    "exemptions-state": {"Exemption", "State", "ExpiresOn", "ExemptedFindings"},
    "exemptions-expired": {"Exemption", "ExpiresOn", "Status", "Change"},
    "exempted-findings": {"Exemption", "ExpiresOn", "Status", "RuleId"},
    "exemptions-file": {"ExemptionsSha256", "FirstRun", "LastRun"},
    "controls-latest": {"Control", "Pass", "Fail", "Unknown", "Exempted", "PassRate"},
    "controls-trend": {"StartTime", "Control", "PassRate"},
    "controls-by-run": {"StartTime", "Control", "Pass", "Fail", "Exempted"},
    "changes-per-run": {"StartTime", "New", "Fixed"},
    "changes-latest-summary": {"Change", "Fail", "Exempted"},
    "changes-latest-list": {"Change", "Status", "Exemption", "Since", "WasStatus", "LastCollected"},
    "changes-latest-counts": {"NewProblems", "Fixed", "ChangedToPass", "ExemptedChanges", "NotCollected"},
    "changes-new": {"Status", "Since", "Severity", "RuleId", "RootCause", "Owner", "FindingId"},
    "changes-fixed": {"Status", "Exemption", "Since", "RuleId", "FindingId"},
    "runs-attention": {"Failed", "Interrupted", "RunsWithQuarantine", "QuarantinedSpoolEntries"},
    "runs-interrupted": {"StartTime", "FindingsDelivered", "Error", "RunId"},
    "runs-quarantine": {"StartTime", "QuarantinedSpoolEntries", "RunId"},
    "runs-permissions": {"Permission", "Granted"},
    "evidence-chain": {"Scope", "ChainPosition", "Link", "ManifestSha256", "PreviousManifestSha256"},
}


def test_workbook_views_return_what_they_show(workbook_results):
    for name, columns in WORKBOOK_VIEWS.items():
        assert columns <= set(result_columns(workbook_results[name])), (name, columns - set(
            result_columns(workbook_results[name])))


def test_workbook_tabs_about_one_rule_read_that_rule():
    for tab, rule in (("matrix", "AKS-ACR-000"), ("observed", "AKS-ACR-002")):
        for name, query in query_items(tab).items():
            assert pinned_rules(query) == [rule], name
    assert pinned_rules(query_items("exemptions")["exemptions-expired"]) == ["AKS-ACR-013"]
    assert "summarize arg_max(TimeGenerated, *) by ClusterId, RegistryId" in query_items("matrix")["pair-matrix"]
    for name in ("controls-latest", "controls-trend", "controls-by-run"):
        assert "mv-expand Control = Controls to typeof(string)" in query_items("controls")[name], name
    assert "bag_keys(Evidence.classes)" in query_items("observed")["observed-by-class"]


def test_workbook_shows_exempted_findings_apart_wherever_it_counts(workbook_results):
    """Every view that counts findings (or events) by status has a column for the exempted ones; the per-run
    chart of observed failures gives them a series of their own instead."""
    counting = {"Pass", "Fail", "Unknown", "Events", "Pairs"}
    for name, result in workbook_results.items():
        columns = result_columns(result)
        if counting & set(columns) and name != "observed-trend":
            assert any(c.startswith("Exempted") for c in columns), name
    assert '"Exempted (all classes)"' in query_items("observed")["observed-trend"]


def test_alert_queries_are_valid_kql_and_yield_what_the_rules_read(kql):
    rules = alert_rules()
    queries = {name: rule["properties"]["criteria"]["allOf"][0]["query"] for name, rule in rules.items()}
    results = kql.analyse(table_schemas(), queries)
    for name, rule in rules.items():
        assert kql.errors(results[name]) == [], name
        columns = {c.split(":")[0] for c in results[name]["columns"]}
        criterion = rule["properties"]["criteria"]["allOf"][0]
        assert criterion["metricMeasureColumn"] in columns, name
        assert {d["name"] for d in criterion.get("dimensions", [])} <= columns, name


def test_dcr_transforms_are_valid_kql_and_fit_their_tables(kql):
    dcr = data_collection_rule()["properties"]
    tables = table_schemas()
    for flow in dcr["dataFlows"]:
        (stream,) = flow["streams"]
        source = {c["name"]: c["type"] for c in dcr["streamDeclarations"][stream]["columns"]}
        result = kql.analyse({"source": source}, {"transform": flow["transformKql"]})["transform"]
        assert kql.errors(result) == [], stream
        table = tables[flow["outputStream"].removeprefix("Custom-")]
        produced = dict(c.split(":", 1) for c in result["columns"])
        assert set(produced) <= set(table), f"{stream}: columns the table lacks: {set(produced) - set(table)}"
        assert produced["TimeGenerated"] == "datetime"
        # Every column reaches the table with the table's type: the stream declaration types the JSON values (ISO
        # strings or null for datetime, true/false for Exempted, objects and arrays for dynamic) before the
        # transform runs, and the transform must neither drop nor retype a column.
        kusto_type = {"boolean": "bool"}
        assert produced == {name: kusto_type.get(kind, kind) for name, kind in table.items()}, stream


def test_the_kql_check_catches_mistakes(kql):
    broken = kql.analyse(table_schemas(), {
        "column": "AcrPullAuditRuns_CL | where RunState == 'Failed' | summarize count()",
        "workbook": substitute("AcrPullAudit_CL | where TimeGenerated {TimeRange} | where Owner in ({Owner}) |"),
    })
    assert all(kql.errors(result) for result in broken.values())


# -- checkov ---------------------------------------------------------------------------------------------------------
def checkov_binary() -> str | None:
    local = ROOT / ".venv" / "checkov" / "bin" / "checkov"  # .ci/run installs it there
    return str(local) if local.exists() else shutil.which("checkov")


@pytest.fixture(scope="module")
def checkov_report() -> dict:
    binary = checkov_binary()
    if binary is None:
        if os.environ.get("CI_REQUIRE_CHECKOV"):
            pytest.fail("checkov is required (CI_REQUIRE_CHECKOV) but neither .venv/checkov nor PATH has it")
        pytest.skip("checkov is not installed (python3 -m venv .venv/checkov && .venv/checkov/bin/pip install checkov)")
    result = subprocess.run([binary, "--framework", "bicep", "-d", str(INFRA), "--skip-download", "-o", "json"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    (bicep_report,) = [r for r in reports if r.get("check_type") == "bicep"]
    return bicep_report


def test_checkov_finds_no_failed_check_and_parses_everything(checkov_report):
    summary = checkov_report["summary"]
    assert checkov_report["results"].get("parsing_errors", []) == [] and summary["parsing_errors"] == 0
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in checkov_report["results"]["failed_checks"]]
    assert failed == []
    assert summary["resource_count"] >= 25, "checkov read fewer resources than the templates declare"


def test_checkov_skips_are_justified_and_in_use(checkov_report):
    comments = {}
    for path in BICEP_FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.search(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?", line)
            if match:
                assert line.strip().startswith("// checkov:skip="), line
                reason = (match.group(2) or "").strip()
                assert len(reason) >= 20, f"{path.name}: {match.group(1)} needs a reason"
                comments[(path.name, match.group(1))] = reason
    skipped = {(Path(c["file_path"]).name, c["check_id"]) for c in checkov_report["results"]["skipped_checks"]}
    assert skipped == set(comments), "a skip comment that suppresses nothing, or a skip without a comment"
