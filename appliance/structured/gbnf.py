"""GBNF, llama.cpp's grammar language: a small builder and the JSON rules every grammar uses.

:class:`GrammarBuilder` collects named rules (``name ::= body``) and renders the grammar
text that ``llama_sampler_init_grammar`` parses; :func:`literal` quotes a string as a GBNF
literal. The JSON rules are written for a small model as much as for JSON:

- whitespace is bounded (a space, or a line break and up to 20 spaces or tabs of indent),
  so a model that likes blank space cannot emit it forever between two tokens;
- an integer has at most 16 digits and an exponent at most 3: beyond float64's precision
  a longer run of digits is a model that lost its way, not a number;
- strings allow any character JSON allows, escapes included.
"""

from __future__ import annotations

import re

WS = "ws"
STRING = "string"
NUMBER = "number"
INTEGER = "integer"
BOOLEAN = "boolean"
NULL = "null"
VALUE = "value"
OBJECT = "object"
ARRAY = "array"

_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_INT_PART = '"-"? ("0" | [1-9] [0-9]{0,15})'

# The JSON rules, by name (each added to a grammar only when something uses it).
JSON_RULES: dict[str, str] = {
    WS: '| " " | "\\n" [ \\t]{0,20}',
    "char": _CHAR,
    STRING: '"\\"" char* "\\""',
    INTEGER: _INT_PART,
    NUMBER: f'{_INT_PART} ("." [0-9]{{1,16}})? ([eE] [-+]? [0-9]{{1,3}})?',
    BOOLEAN: '"true" | "false"',
    NULL: '"null"',
    VALUE: "object | array | string | number | boolean | null",
    "member": "string ws \":\" ws value ws",
    OBJECT: '"{" ws (member ("," ws member)*)? "}"',
    ARRAY: '"[" ws (value ws ("," ws value ws)*)? "]"',
}
# What each JSON rule refers to, so that adding one adds its dependencies.
_DEPENDS: dict[str, tuple[str, ...]] = {
    STRING: ("char",), VALUE: (OBJECT, ARRAY, STRING, NUMBER, BOOLEAN, NULL),
    "member": (STRING, WS, VALUE), OBJECT: (WS, "member"), ARRAY: (WS, VALUE),
}

_NAME_CHARS = re.compile(r"[^a-zA-Z0-9-]+")


def literal(text: str) -> str:
    """``text`` as a GBNF string literal (control characters escaped)."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def alternatives(exprs: list[str]) -> str:
    """``( a | b | ... )`` (just ``a`` for one)."""
    return exprs[0] if len(exprs) == 1 else "(" + " | ".join(exprs) + ")"


class _Node:
    __slots__ = ("children", "end")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.end = False  # a text ends here


def one_of_texts(builder: GrammarBuilder, texts: list[str], hint: str) -> str:
    """Exactly one of ``texts`` (non-empty; a repeated text is one path), as a prefix tree:
    texts that begin alike share one path and part only where they differ, each branch
    point a rule of its own. llama.cpp's grammar then follows one stack per branch instead
    of one per text: as plain alternatives, a 4,096-value enum took 2.3 s to mask the
    vocabulary once, in the engine thread that samples every sequence. Built without
    recursion, so a long chain of prefixes ("a", "aa", "aaa", ...) is only a long list of
    rules."""
    root = _Node()
    for text in texts:
        node = root
        for ch in text:
            child = node.children.get(ch)
            if child is None:
                child = node.children[ch] = _Node()
            node = child
        node.end = True
    expression = ""
    work: list[tuple[_Node, str | None]] = [(root, None)]
    while work:
        node, rule = work.pop()
        alts = []
        for ch, child in node.children.items():
            label = ch
            while not child.end and len(child.children) == 1:  # one way on: merge it
                (step, child), = child.children.items()
                label += step
            if child.children:
                sub = builder.name(f"{hint}-t")
                work.append((child, sub))
                alts.append(f"{literal(label)} {sub}")
            else:
                alts.append(literal(label))
        body = f"({' | '.join(alts)})?" if node.end else alternatives(alts)
        if rule is None:
            expression = body
        else:
            builder.define(rule, body)
    return expression


class GrammarBuilder:
    """Named rules, rendered as one grammar whose start rule is ``root``."""

    def __init__(self) -> None:
        self._rules: dict[str, str] = {}
        self._taken: set[str] = set(JSON_RULES) | {"root"}
        self._last: dict[str, int] = {}  # the highest suffix given to each base

    def name(self, hint: str) -> str:
        """A fresh rule name made from ``hint`` (GBNF names are letters, digits and dashes)."""
        base = _NAME_CHARS.sub("-", hint).strip("-").lower() or "r"
        candidate, n = base, self._last.get(base, 1)
        while candidate in self._taken:
            n += 1
            candidate = f"{base}-{n}"
        self._last[base] = n  # a prefix tree asks for thousands of names from one hint
        self._taken.add(candidate)
        return candidate

    def define(self, name: str, body: str) -> str:
        """Define (or redefine) rule ``name``; returns the name."""
        self._rules[name] = body
        return name

    def use(self, json_rule: str) -> str:
        """Make one of :data:`JSON_RULES` (and what it refers to) part of the grammar."""
        if json_rule not in self._rules:
            self._rules[json_rule] = JSON_RULES[json_rule]
            for dep in _DEPENDS.get(json_rule, ()):
                self.use(dep)
        return json_rule

    def render(self, root: str) -> str:
        lines = [f"root ::= {root}"]
        lines.extend(f"{name} ::= {body}" for name, body in self._rules.items())
        return "\n".join(lines) + "\n"
