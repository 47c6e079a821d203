"""JSON Schema to GBNF: the subset OpenAI's strict structured outputs allow, and no more.

Supported: ``type`` (one or a list, so ``["string", "null"]`` is nullable), ``properties``
with ``required`` (optional properties may be left out; properties come in the declared
order), ``additionalProperties`` (``false``; or a schema when there are no ``properties``:
a map), ``enum``, ``const``, ``items`` with ``minItems``/``maxItems``, ``anyOf``, ``$ref``
into ``$defs``/``definitions`` (recursion included), ``nullable``, strings with
``minLength``/``maxLength`` or a ``format`` of ``date``, ``time``, ``date-time``, ``uuid``
or ``ipv4``. Annotations (``title``, ``description``, ``default``, ``examples`` ...) are
ignored. Anything else (``pattern``, ``minimum``, ``oneOf``, ``allOf``, ``not``, other
formats ...) raises :class:`UnsupportedSchema` naming the keyword and where it is, rather
than being silently unenforced.

Every value the grammar accepts validates against the schema. Two deliberate narrowings:
``date`` never produces 29 February (the grammar cannot tell leap years cheaply), and
numbers follow :mod:`~appliance.structured.gbnf`'s limits on digits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from appliance.structured.gbnf import (
    BOOLEAN,
    INTEGER,
    NULL,
    NUMBER,
    OBJECT,
    STRING,
    VALUE,
    WS,
    GrammarBuilder,
    alternatives,
    literal,
    one_of_texts,
)

MAX_REPEAT = 256  # the largest minItems/maxItems/minLength/maxLength bound enforced
MAX_DEPTH = 64  # schema nesting

ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "$schema", "$id", "$comment",
    "deprecated", "readOnly", "writeOnly", "$defs", "definitions", "strict",
})
_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_BY_TYPE = {
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "minItems", "maxItems"}),
    "string": frozenset({"format", "minLength", "maxLength"}),
}
_SUPPORTED = frozenset({"type", "enum", "const", "anyOf", "$ref", "nullable"}).union(
    *_BY_TYPE.values())

_DATE = ('[0-9]{4} "-" (("0" [13578] | "1" [02]) "-" ("0" [1-9] | [12] [0-9] | "3" [01])'
         ' | ("0" [469] | "11") "-" ("0" [1-9] | [12] [0-9] | "30")'
         ' | "02" "-" ("0" [1-9] | "1" [0-9] | "2" [0-8]))')
_TIME = ('([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,6})?'
         ' ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])')
_HEX = "[0-9a-fA-F]"
_OCTET = '("25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9] [0-9] | [0-9])'
FORMATS: dict[str, str] = {
    "date": _DATE,
    "time": _TIME,
    "date-time": f"{_DATE} \"T\" {_TIME}",
    "uuid": f'{_HEX}{{8}} "-" {_HEX}{{4}} "-" {_HEX}{{4}} "-" {_HEX}{{4}} "-" {_HEX}{{12}}',
    "ipv4": f'{_OCTET} "." {_OCTET} "." {_OCTET} "." {_OCTET}',
}

class UnsupportedSchema(Exception):
    """A schema the converter will not enforce: ``keyword`` at ``path`` (a JSON pointer)."""

    def __init__(self, keyword: str, path: str, why: str) -> None:
        super().__init__(f"{keyword!r} at {path or '/'}: {why}")
        self.keyword = keyword
        self.path = path
        self.why = why


def json_text(value: Any) -> str:
    """A JSON value as the exact text a grammar demands for it (``enum``/``const``)."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def json_literal(value: Any) -> str:
    return literal(json_text(value))


def _literal_texts(options: list[Any]) -> list[str] | None:
    """The JSON texts of ``options`` when each is a ``const`` or a non-empty
    ``enum`` and nothing else (annotations aside); None otherwise."""
    texts: list[str] = []
    for option in options:
        if not isinstance(option, Mapping) or ("const" in option) == ("enum" in option):
            return None
        if any(k not in ("const", "enum") and k not in ANNOTATIONS for k in option):
            return None
        if "const" in option:
            texts.append(json_text(option["const"]))
        elif isinstance(option["enum"], list) and option["enum"]:
            texts.extend(json_text(v) for v in option["enum"])
        else:
            return None
    return texts


class SchemaConverter:
    """Adds JSON schemas to a :class:`GrammarBuilder` as rules.

    One converter can hold several schemas (the functions of a tool-call grammar): each
    :meth:`add` resolves ``$ref`` within the schema it was given."""

    def __init__(self, builder: GrammarBuilder) -> None:
        self.b = builder
        self._defs: Mapping[str, Any] = {}
        self._refs: dict[str, str] = {}
        self._prefix = ""

    def add(self, schema: Any, prefix: str) -> str:
        """The name of a rule matching ``schema`` (a JSON schema as decoded JSON)."""
        if isinstance(schema, Mapping):
            defs: dict[str, Any] = {}
            for key in ("definitions", "$defs"):
                value = schema.get(key, {})
                if not isinstance(value, Mapping):
                    raise UnsupportedSchema(key, "", "must be an object of schemas")
                defs.update({f"#/{key}/{k}": v for k, v in value.items()})
            self._defs, self._refs, self._prefix = defs, {}, prefix
        rule = self.b.name(prefix)
        self.b.define(rule, self._visit(schema, "", prefix, 0))
        return rule

    # --- dispatch ---------------------------------------------------------------------------
    def _visit(self, schema: Any, path: str, hint: str, depth: int) -> str:
        """A GBNF expression for the values ``schema`` accepts."""
        if depth > MAX_DEPTH:
            raise UnsupportedSchema("(depth)", path, f"nested deeper than {MAX_DEPTH} levels")
        if schema is True or schema == {}:
            return self.b.use(VALUE)
        if not isinstance(schema, Mapping):
            raise UnsupportedSchema("(schema)", path, "a schema must be an object or true")
        for key in schema:
            if key not in _SUPPORTED and key not in ANNOTATIONS:
                raise UnsupportedSchema(key, path, "this keyword is not supported")
        if "$ref" in schema:
            return self._ref(schema, path)
        if "anyOf" in schema:
            return self._any_of(schema, path, hint, depth)
        if "const" in schema:
            return json_literal(schema["const"])
        if "enum" in schema:
            return self._enum(schema, path, hint)
        types = self._types(schema, path)
        exprs = [self._typed(t, schema, path, hint, depth) for t in types]
        if schema.get("nullable") is True and "null" not in types:
            exprs.append(self.b.use(NULL))
        return alternatives(exprs)

    def _types(self, schema: Mapping[str, Any], path: str) -> list[str]:
        declared = schema.get("type")
        if declared is None:  # implied by the keywords present
            implied = [t for t, keys in _BY_TYPE.items() if keys & schema.keys()]
            return implied or list(_TYPES)
        names = declared if isinstance(declared, list) else [declared]
        if not names or any(n not in _TYPES for n in names):
            raise UnsupportedSchema("type", path, f"must be one of {list(_TYPES)} or a list "
                                    f"of them, not {declared!r}")
        return list(dict.fromkeys(names))

    def _typed(self, kind: str, schema: Mapping[str, Any], path: str, hint: str,
               depth: int) -> str:
        if kind == "object":
            return self._object(schema, path, hint, depth)
        if kind == "array":
            return self._array(schema, path, hint, depth)
        if kind == "string":
            return self._string(schema, path)
        return self.b.use({"number": NUMBER, "integer": INTEGER, "boolean": BOOLEAN,
                           "null": NULL}[kind])

    # --- combinators ------------------------------------------------------------------------
    def _ref(self, schema: Mapping[str, Any], path: str) -> str:
        ref = schema["$ref"]
        others = [k for k in schema if k != "$ref" and k not in ANNOTATIONS]
        if others:
            raise UnsupportedSchema(others[0], path, "keywords beside $ref are not supported")
        if not isinstance(ref, str) or ref not in self._defs:
            raise UnsupportedSchema("$ref", path, f"{ref!r} does not name an entry of $defs "
                                    "or definitions (only local references are supported)")
        rule = self._refs.get(ref)
        if rule is None:  # named before it is visited, so a recursive reference finds it
            rule = self._refs[ref] = self.b.name(f"{self._prefix}-{ref.rsplit('/', 1)[-1]}")
            self.b.define(rule, self._visit(self._defs[ref], ref[1:], rule, 1))
        return rule

    def _any_of(self, schema: Mapping[str, Any], path: str, hint: str, depth: int) -> str:
        options = schema["anyOf"]
        others = [k for k in schema if k != "anyOf" and k not in ANNOTATIONS]
        if others:
            raise UnsupportedSchema(others[0], path, "keywords beside anyOf are not supported")
        if not isinstance(options, list) or not options:
            raise UnsupportedSchema("anyOf", path, "must be a non-empty array of schemas")
        texts = _literal_texts(options)
        if texts is not None:  # a list of values spelled as anyOf: one prefix tree too
            return one_of_texts(self.b, texts, hint)
        return alternatives([self._visit(o, f"{path}/anyOf/{i}", f"{hint}-{i}", depth + 1)
                             for i, o in enumerate(options)])

    def _enum(self, schema: Mapping[str, Any], path: str, hint: str) -> str:
        values = schema["enum"]
        if not isinstance(values, list) or not values:
            raise UnsupportedSchema("enum", path, "must be a non-empty array")
        return one_of_texts(self.b, [json_text(v) for v in values], hint)

    # --- types ------------------------------------------------------------------------------
    def _object(self, schema: Mapping[str, Any], path: str, hint: str, depth: int) -> str:
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        required = schema.get("required", [])
        if not isinstance(props, Mapping):
            raise UnsupportedSchema("properties", path, "must be an object of schemas")
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise UnsupportedSchema("required", path, "must be an array of names")
        missing = [r for r in required if r not in props]
        if missing:
            raise UnsupportedSchema("required", path, f"names {missing[0]!r}, which is not in "
                                    "properties")
        if not props:
            if isinstance(extra, Mapping) and extra:
                return self._map(extra, path, hint, depth)
            if extra is False:
                return f'"{{" {self.b.use(WS)} "}}"'
            return self.b.use(OBJECT)
        if isinstance(extra, Mapping) and extra:
            raise UnsupportedSchema("additionalProperties", path, "a schema beside "
                                    "properties is not supported (use false)")
        ws = self.b.use(WS)
        members = []
        for name, sub in props.items():
            value = self._visit(sub, f"{path}/properties/{name}", f"{hint}-{name}", depth + 1)
            members.append((f'{json_literal(name)} {ws} ":" {ws} {value} {ws}',
                            name in required))
        rule = self.b.name(hint)
        return self.b.define(rule, f'"{{" {ws} {self._members(members, rule)} "}}"')

    def _members(self, members: list[tuple[str, bool]], rule: str) -> str:
        """Properties in order, the optional ones skippable, commas only between those
        present. ``tail-i`` is what may follow once something before ``i`` was written."""
        n = len(members)
        ws = self.b.use(WS)
        tail = [f"{rule}-tail-{i}" for i in range(n)]

        def then(i: int) -> str:  # what may follow member i
            return f" {tail[i + 1]}" if i + 1 < n else ""

        for i in range(n - 1, 0, -1):
            member, needed = members[i]
            step = f'"," {ws} {member}'
            self.b.define(tail[i], (step if needed else f"({step})?") + then(i))
        starts = []
        for i, (member, needed) in enumerate(members):
            starts.append(f"{member}{then(i)}")
            if needed:
                return alternatives(starts)
        return f"({' | '.join(starts)})?"  # every property optional: {} too

    def _map(self, values: Mapping[str, Any], path: str, hint: str, depth: int) -> str:
        value = self._visit(values, f"{path}/additionalProperties", f"{hint}-value",
                            depth + 1)
        ws, key = self.b.use(WS), self.b.use(STRING)
        member = f'{key} {ws} ":" {ws} {value} {ws}'
        rule = self.b.name(hint)
        return self.b.define(rule, f'"{{" {ws} ({member} ("," {ws} {member})*)? "}}"')

    def _array(self, schema: Mapping[str, Any], path: str, hint: str, depth: int) -> str:
        items = schema.get("items", True)
        if isinstance(items, list):
            raise UnsupportedSchema("items", path, "the array (tuple) form is not supported")
        lo, hi = self._bounds(schema, path, "minItems", "maxItems")
        item = self._visit(items, f"{path}/items", f"{hint}-item", depth + 1)
        if items is True:
            item = self.b.use(VALUE)
        ws = self.b.use(WS)
        element = self.b.define(self.b.name(f"{hint}-element"), f"{item} {ws}")
        comma = self.b.define(self.b.name(f"{hint}-next"), f'"," {ws} {element}')
        if hi == 0:
            body = ""
        elif lo == 0:
            rest = f"{comma}*" if hi is None else f"{comma}{{0,{hi - 1}}}"
            body = f"({element} {rest})?"
        else:
            rest = f"{comma}{{{lo - 1},}}" if hi is None else f"{comma}{{{lo - 1},{hi - 1}}}"
            body = f"{element} {rest}"
        rule = self.b.name(hint)
        return self.b.define(rule, f'"[" {ws} {body} "]"')

    def _string(self, schema: Mapping[str, Any], path: str) -> str:
        fmt = schema.get("format")
        lo, hi = self._bounds(schema, path, "minLength", "maxLength")
        if fmt is not None:
            if fmt not in FORMATS:
                raise UnsupportedSchema("format", path, f"format {fmt!r} is not supported "
                                        f"(supported: {', '.join(FORMATS)})")
            if lo or hi is not None:
                raise UnsupportedSchema("minLength" if lo else "maxLength", path,
                                        "length limits beside a format are not supported")
            return f'"\\"" {FORMATS[fmt]} "\\""'
        if not lo and hi is None:
            return self.b.use(STRING)
        self.b.use(STRING)
        reps = f"{{{lo},}}" if hi is None else f"{{{lo},{hi}}}"
        return f'"\\"" char{reps} "\\""'

    @staticmethod
    def _bounds(schema: Mapping[str, Any], path: str, lo_key: str,
                hi_key: str) -> tuple[int, int | None]:
        lo, hi = schema.get(lo_key, 0), schema.get(hi_key)
        for key, value in ((lo_key, lo), (hi_key, hi)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UnsupportedSchema(key, path, "must be a non-negative integer")
            if value > MAX_REPEAT:
                raise UnsupportedSchema(key, path, f"bounds above {MAX_REPEAT} are not "
                                        "supported")
        if hi is not None and lo > hi:
            raise UnsupportedSchema(lo_key, path, f"{lo_key} is above {hi_key}")
        return int(lo), hi


def schema_grammar(schema: Any) -> str:
    """The GBNF grammar of one JSON schema (its values only, nothing around them)."""
    builder = GrammarBuilder()
    rule = SchemaConverter(builder).add(schema, "schema")
    return builder.render(rule)
