"""Render a chat template exactly as transformers' `apply_chat_template` does, without transformers.

Same Jinja environment (immutable sandbox, trim_blocks, lstrip_blocks, loop controls), same globals
(`raise_exception`, `strftime_now`), same `tojson` filter (no HTML escaping, unicode kept) and the same
variables (`messages`, `tools`, `documents`, `add_generation_prompt` and the special tokens), so a
prompt rendered here is character-identical to the one the model was trained with.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from vinci_edge.errors import ConfigError, PromptError


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}`: transformers uses it to mask assistant tokens for
    training. For rendering it is transparent, but templates that use it must still compile."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML, which would change the prompt.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=32)
def compile_chat_template(template: str) -> jinja2.Template:
    """Compile once per template string (rendering is called per request)."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(
            f"the tokenizer's chat template is not valid Jinja (line {exc.lineno}): {exc.message}",
            hint="fix `chat_template` in tokenizer_config.json (or chat_template.jinja)",
        ) from exc


def render_chat_template(
    template: str,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool,
    tools: list[dict[str, Any]] | None = None,
    documents: list[dict[str, Any]] | None = None,
    **variables: Any,
) -> str:
    """Render `messages`; `variables` are the special tokens and any extra template variables."""
    compiled = compile_chat_template(template)
    try:
        return compiled.render(
            messages=messages,
            tools=tools,
            documents=documents,
            add_generation_prompt=add_generation_prompt,
            **variables,
        )
    except jinja2.TemplateError as exc:
        # Templates call raise_exception() for conversations they do not accept (roles out of order,
        # a system message where none is allowed, ...).
        raise PromptError(
            f"the chat template rejected the conversation: {exc}",
            hint="check the message roles and their order against what this model's template accepts",
        ) from exc
