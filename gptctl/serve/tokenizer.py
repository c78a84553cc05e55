"""The served model's tokenizer without transformers: `tokenizers` for tokenizer.json, jinja2 for the chat template.

`from transformers import AutoTokenizer` imports torch: 7.8 s of a server's start on the shared 2-core
test machine, against ~0.1 s for this. Chat templates render as transformers renders them (a sandboxed
jinja2 environment with trim_blocks, lstrip_blocks, loop controls, `raise_exception`, `strftime_now` and
a `tojson` that keeps non-ASCII text); an artifact without tokenizer.json falls back to transformers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


class LightTokenizer:
    """The parts of a transformers fast tokenizer the server uses (encode, decode, chat template)."""

    def __init__(self, directory: str | Path):
        from tokenizers import Tokenizer

        directory = Path(directory)
        self._tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        config = _read_json(directory / "tokenizer_config.json")
        special = {**_read_json(directory / "special_tokens_map.json"), **config}
        self.special_tokens = {name: _token_text(special.get(name)) for name in _SPECIAL_NAMES}
        self.eos_token_id = (
            self._tok.token_to_id(self.special_tokens["eos_token"] or "") if self.special_tokens["eos_token"] else None
        )
        self.pad_token_id = (
            self._tok.token_to_id(self.special_tokens["pad_token"] or "") if self.special_tokens["pad_token"] else None
        )
        self.chat_template = _chat_template(directory, config)
        self._template = None

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens=True)}

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True, **_ignored: Any) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True, tokenize: bool = True
    ) -> list[int] | str:
        if not self.chat_template:
            raise ValueError("the tokenizer has no chat template")
        if self._template is None:
            self._template = _compile(self.chat_template)
        values = {k: v for k, v in self.special_tokens.items() if v is not None}
        text = self._template.render(messages=messages, add_generation_prompt=add_generation_prompt, **values)
        # The template writes the special tokens itself (as transformers encodes it: no BOS added again).
        return self.encode(text, add_special_tokens=False) if tokenize else text


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _chat_template(directory: Path, config: dict[str, Any]) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if not template and (directory / "chat_template.jinja").is_file():
        template = (directory / "chat_template.jinja").read_text()
    return template or None


def _compile(template: str):
    import datetime

    import jinja2
    import jinja2.ext  # `import jinja2` alone leaves jinja2.ext unloaded in a fresh server process
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(template)


def load_tokenizer(directory: str | Path):
    """A LightTokenizer when the artifact has tokenizer.json, else transformers' AutoTokenizer."""
    directory = Path(directory)
    if (directory / "tokenizer.json").is_file():
        return LightTokenizer(directory)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))
