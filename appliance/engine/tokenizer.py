"""What the request pipeline sees of the loaded model: its tokenizer and chat template.

The model is loaded by the engine's own thread after the server starts, so every call asks
the engine whether it is there yet (503 ``model_not_ready`` while loading, 503 with the
reason once loading failed). ``LlamaModel`` itself never leaves ``engine/``.

Tokenising is thread-safe in llama.cpp (it reads the vocabulary only), so the pipeline may
tokenise on the event loop (short prompts) or on a worker thread (long ones) while the
engine thread decodes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from appliance.engine.chat import ChatTemplate, NoChatTemplate
from appliance.engine.native import LlamaModel
from appliance.errors import NotReady, Unavailable


class LoadedModel(Protocol):
    """The engine as this facade needs it."""

    @property
    def model(self) -> LlamaModel | None: ...

    @property
    def state(self) -> str: ...

    @property
    def error(self) -> str | None: ...


class Tokenizer:
    def __init__(self, engine: LoadedModel, *, model_id: str, use_template: bool,
                 template_fallback: str = "") -> None:
        self._engine = engine
        self._model_id = model_id
        self._use_template = use_template
        self._fallback = template_fallback
        self._template: ChatTemplate | NoChatTemplate | None = None
        self._control: _Control | None = None

    def _model(self) -> LlamaModel:
        model = self._engine.model
        if model is None or self._engine.state != "ready":
            if self._engine.state == "failed":
                raise Unavailable(f"the model failed to load: {self._engine.error}")
            raise NotReady("the model is still loading; retry shortly", retry_after=2)
        return model

    @property
    def n_vocab(self) -> int:
        return self._model().n_vocab

    def tokenize_chat(self, parts: Sequence[tuple[str, bool]]) -> list[int]:
        """A chat prompt from :meth:`ChatTemplate.render_parts`: the template's markup
        becomes control tokens, the client's text never does (a ``<|im_start|>`` typed in a
        message stays those characters). The model's BOS is added once if it wants one."""
        model = self._model()
        if self._control is None:
            self._control = _Control.of(model)
        control = self._control
        if any(client and control.found_in(text) for text, client in parts):
            tokens = _tokenize_fragments(model, _fragments(parts, control))
        else:  # (the common case: exactly the tokens a joint parse gives)
            tokens = _tokenize_joint(model, "".join(t for t, _ in parts), control)
        if model.add_bos and model.bos >= 0 and (not tokens or tokens[0] != model.bos):
            tokens.insert(0, model.bos)
        return tokens

    def tokenize_text(self, text: str, *, add_special: bool = True) -> list[int]:
        """Plain text (a completion prompt, a memory note): special-token spellings in it
        stay text."""
        return self._model().tokenize(text, add_special=add_special, parse_special=False)

    def detokenize(self, tokens: tuple[int, ...] | list[int]) -> str:
        model = self._model()
        return b"".join(model.piece(t) for t in tokens).decode("utf-8", "replace")

    def template(self) -> ChatTemplate | NoChatTemplate:
        """The model's chat template (or the configured fallback), compiled once."""
        if self._template is None:
            model = self._model()
            source = model.chat_template() if self._use_template else None
            source = source or self._fallback or None
            if source is None:
                self._template = NoChatTemplate(self._model_id)
            else:
                self._template = ChatTemplate(
                    source, bos_token=model.token_text(model.bos) if model.bos >= 0 else "",
                    eos_token=model.token_text(model.eos) if model.eos >= 0 else "")
        return self._template

    def template_source(self) -> str:
        template = self.template()
        return template.source if isinstance(template, ChatTemplate) else ""



# Control tokens per llama.cpp parse. Its parse grows with the square of their number:
# 8,000 one-word turns in one call took 3.8 s, and 100,000 (one client's body) would keep
# a core busy for minutes.
_JOINT_CONTROLS = 64


@dataclass(frozen=True)
class _Control:
    """A model's control tokens by text, and one pattern finding any of them."""

    ids: dict[str, int]
    pattern: re.Pattern[str] | None  # None: the model has none

    @classmethod
    def of(cls, model: LlamaModel) -> _Control:
        ids = model.control_tokens
        texts = sorted(ids, key=len, reverse=True)  # the longest match wins, as in llama.cpp
        return cls(ids, re.compile("|".join(map(re.escape, texts))) if texts else None)

    def found_in(self, text: str) -> bool:
        return self.pattern is not None and self.pattern.search(text) is not None


def _fragments(parts: Sequence[tuple[str, bool]], control: _Control) -> list[str | int]:
    """Control tokens found in the template's text, as ids; everything else (template text
    and client text alike) as runs of plain text. Splitting only the template's text, the
    way llama.cpp splits a whole prompt, keeps the tokens of the plain runs the same."""
    out: list[str | int] = []
    plain = ""
    for text, client in parts:
        if client or control.pattern is None:
            plain += text
            continue
        pos = 0
        for m in control.pattern.finditer(text):
            plain += text[pos:m.start()]
            if plain:
                out.append(plain)
            plain = ""
            out.append(control.ids[m.group()])
            pos = m.end()
        plain += text[pos:]
    if plain:
        out.append(plain)
    return out


def _tokenize_joint(model: LlamaModel, text: str, control: _Control) -> list[int]:
    """``text`` parsed with its control tokens, in pieces of about :data:`_JOINT_CONTROLS`
    of them. Each cut falls right after a control token and before a character that is not
    a space: llama.cpp's own parse cuts there too, whatever whitespace its tokens strip, so
    the tokens are those of one call."""
    tokens: list[int] = []
    start = count = 0
    for m in control.pattern.finditer(text) if control.pattern is not None else ():
        count += 1
        end = m.end()
        if count >= _JOINT_CONTROLS and end < len(text) and not text[end].isspace():
            tokens.extend(model.tokenize(text[start:end], add_special=False,
                                         parse_special=True))
            start, count = end, 0
    tokens.extend(model.tokenize(text[start:], add_special=False, parse_special=True))
    return tokens


def _tokenize_fragments(model: LlamaModel, fragments: list[str | int]) -> list[int]:
    tokens: list[int] = []
    for fragment in fragments:
        if isinstance(fragment, int):
            tokens.append(fragment)
        else:
            tokens.extend(model.tokenize(fragment, add_special=False, parse_special=False))
    return tokens
