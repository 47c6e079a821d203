"""What the request pipeline sees of the loaded model: its tokenizer and chat template.

The model is loaded by the engine's own thread after the server starts, so every call asks
the engine whether it is there yet (503 ``model_not_ready`` while loading, 503 with the
reason once loading failed). ``LlamaModel`` itself never leaves ``engine/``.

Tokenising is thread-safe in llama.cpp (it reads the vocabulary only), so the pipeline may
tokenise on the event loop (short prompts) or on a worker thread (long ones) while the
engine thread decodes.
"""

from __future__ import annotations

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

    def tokenize_prompt(self, rendered: str) -> list[int]:
        """A chat prompt rendered by the template: its markup becomes control tokens; the
        model's BOS is added once if it wants one."""
        model = self._model()
        tokens = model.tokenize(rendered, add_special=False, parse_special=True)
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
