"""Text data for training and evaluation: read and check it before any model loads, then tokenise it.

Shared by `gptctl optimize` (training and --eval-data), `gptctl export --eval-data` and the recipes, so
that every step reads a file and counts its tokens the same way. Formats: JSONL with one record per line,
each `{"text"}`, `{"prompt", "completion"}` (loss on the completion only) or
`{"messages": [{"role", "content"}, ...]}` (rendered with the tokenizer's chat template, loss on the
assistant turns); or a `.txt` file whose blank-line separated paragraphs are samples. Every problem is a
`BadInput` naming the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput

IGNORE = -100  # label of a position that carries no loss (prompt, padding)
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_FORMAT_HINT = (
    'each line is {"text": ...}, {"prompt": ..., "completion": ...} or {"messages": [{"role": ..., "content": ...}]}'
)


@dataclass
class Record:
    """One sample as read from the file, before tokenisation."""

    kind: str  # "text" | "completion" | "chat"
    line: int  # 1-based line where the sample starts
    text: str = ""
    prompt: str = ""
    completion: str = ""
    messages: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Sample:
    """A tokenised sequence; `labels` is IGNORE where no loss is taken."""

    input_ids: list[int]
    labels: list[int]
    line: int = 0  # where it came from (0 for packed sequences)


@dataclass
class Dataset:
    """Tokenised samples plus what tokenisation did (reported in the manifest)."""

    path: str
    samples: list[Sample]
    records: int
    skipped_too_long: int = 0
    formats: dict[str, int] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return sum(len(s.input_ids) for s in self.samples)

    def summary(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "sequences": len(self.samples),
            "tokens": self.tokens,
            "skipped_too_long": self.skipped_too_long,
            "formats": self.formats,
        }


def read_records(path: str | Path, flag: str = "--data") -> list[Record]:
    """Read and check a data file; raise BadInput naming the file and line of the first problem."""
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{flag} {p}: no such file", "check the path")
    if not p.is_file():
        raise BadInput(f"{flag} {p} is not a file", "pass a .jsonl or .txt file")
    if p.suffix.lower() not in _JSONL_SUFFIXES + (".txt",):
        raise BadInput(
            f"{flag} {p}: unsupported file type {p.suffix or '(none)'!r}",
            "use .jsonl (one JSON object per line) or .txt",
        )
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise BadInput(f"{flag} {p}: cannot read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise BadInput(f"{p}:{line}: not UTF-8 text", "save the file as UTF-8") from None
    records = _read_txt(text) if p.suffix.lower() == ".txt" else _read_jsonl(text, p)
    if not records:
        raise BadInput(
            f"{p} is empty: no samples in it",
            _FORMAT_HINT if p.suffix.lower() != ".txt" else "separate samples by blank lines",
        )
    return records


def _read_txt(text: str) -> list[Record]:
    records, block, start = [], [], 0
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            if not block:
                start = n
            block.append(line.rstrip())
        elif block:
            records.append(Record("text", start, text="\n".join(block)))
            block = []
    if block:
        records.append(Record("text", start, text="\n".join(block)))
    return records


def _read_jsonl(text: str, p: Path) -> list[Record]:
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(
                f"{p}:{n}: not valid JSON ({exc.msg}, column {exc.colno})", "one JSON object per line"
            ) from None
        records.append(_record(obj, p, n))
    return records


def _record(obj: Any, p: Path, n: int) -> Record:
    where = f"{p}:{n}"
    if not isinstance(obj, dict):
        raise BadInput(f"{where}: expected a JSON object, got {type(obj).__name__}", _FORMAT_HINT)
    if "messages" in obj:
        return Record("chat", n, messages=_messages(obj["messages"], where))
    if "prompt" in obj or "completion" in obj:
        for key in ("prompt", "completion"):
            if key not in obj:
                raise BadInput(f"{where}: missing field {key!r} (a prompt/completion record needs both)", _FORMAT_HINT)
            if not isinstance(obj[key], str):
                raise BadInput(f"{where}: field {key!r} must be a string, got {type(obj[key]).__name__}")
        if not obj["completion"].strip():
            raise BadInput(f"{where}: field 'completion' is empty", "every record needs a completion to learn from")
        return Record("completion", n, prompt=obj["prompt"], completion=obj["completion"])
    if "text" in obj:
        if not isinstance(obj["text"], str):
            raise BadInput(f"{where}: field 'text' must be a string, got {type(obj['text']).__name__}")
        if not obj["text"].strip():
            raise BadInput(f"{where}: field 'text' is empty")
        return Record("text", n, text=obj["text"])
    found = ", ".join(repr(k) for k in obj) or "none"
    raise BadInput(
        f"{where}: missing field: expected 'text', 'prompt'+'completion' or 'messages' (found {found})", _FORMAT_HINT
    )


def _messages(msgs: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(msgs, list) or not msgs:
        raise BadInput(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise BadInput(f"{where}: messages[{i}] must be an object with string 'role' and 'content'")
    if not any(m["role"] == "assistant" for m in msgs):
        raise BadInput(f"{where}: no 'assistant' message to learn from", "the loss is taken on assistant turns")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def tokenize(
    records: list[Record], tokenizer, *, max_length: int, packing: bool, path: str, for_eval: bool = False
) -> Dataset:
    """Tokenise records into training (or evaluation) sequences of at most `max_length` tokens.

    Training without packing skips samples longer than `max_length` (all of them too long is an
    error); with packing every sample is concatenated and cut into full-length sequences.
    Evaluation keeps every token: long samples are cut into consecutive windows.
    """
    eos = tokenizer.eos_token_id
    # A sample ends with EOS, unless EOS doubles as the BOS the next sample starts with anyway.
    append_eos = eos is not None and eos != tokenizer.bos_token_id
    formats: dict[str, int] = {}
    encoded: list[Sample] = []
    for r in records:
        formats[r.kind] = formats.get(r.kind, 0) + 1
        ids, labels = _encode(r, tokenizer, append_eos, eos, path)
        if sum(1 for x in labels[1:] if x != IGNORE) == 0:
            continue  # nothing to predict (e.g. a single token)
        encoded.append(Sample(ids, labels, r.line))
    data = Dataset(path=path, samples=[], records=len(records), formats=formats)
    if for_eval:
        for s in encoded:
            data.samples.extend(_windows(s, max_length))
    elif packing:
        data.samples = _pack(encoded, max_length)
    else:
        data.samples = [s for s in encoded if len(s.input_ids) <= max_length]
        data.skipped_too_long = len(encoded) - len(data.samples)
    if not data.samples:
        if encoded and not for_eval and not packing:
            shortest = min(encoded, key=lambda s: len(s.input_ids))
            raise BadInput(
                f"{path}: every sample is longer than --max-length {max_length} tokens "
                f"(the shortest, line {shortest.line}, has {len(shortest.input_ids)})",
                "raise --max-length or pass --packing to split long samples",
            )
        raise BadInput(f"{path}: no sample has a token to learn from", "check that the samples are not empty")
    return data


def _encode(r: Record, tok, append_eos: bool, eos: int | None, path: str) -> tuple[list[int], list[int]]:
    if r.kind == "text":
        ids = tok(r.text)["input_ids"] + ([eos] if append_eos else [])
        return ids, list(ids)
    if r.kind == "completion":
        p = tok(r.prompt)["input_ids"] if r.prompt else tok("")["input_ids"]
        c = tok(r.completion, add_special_tokens=False)["input_ids"] + ([eos] if append_eos else [])
        return p + c, [IGNORE] * len(p) + c
    return _encode_chat(r, tok, path)


def _encode_chat(r: Record, tok, path: str) -> tuple[list[int], list[int]]:
    if not getattr(tok, "chat_template", None):
        raise BadInput(
            f"{path}:{r.line}: chat 'messages' need a tokenizer with a chat template, and this model's has none",
            "convert the data to {prompt, completion} or {text} records",
        )
    try:
        full = tok.apply_chat_template(r.messages, tokenize=False)
    except Exception as exc:  # jinja errors: the template rejects these messages (e.g. a role it does not know)
        raise BadInput(f"{path}:{r.line}: the chat template rejects these messages: {exc}") from None
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    spans = _assistant_spans(r.messages, tok, full)
    if spans is None:  # the template does not render prefixes consistently: learn every token
        return ids, list(ids)
    labels = [
        t if any(a <= s and e <= b and s < e for a, b in spans) else IGNORE
        for t, (s, e) in zip(ids, enc["offset_mapping"], strict=False)
    ]
    return ids, labels


def _assistant_spans(messages, tok, full: str) -> list[tuple[int, int]] | None:
    """Character spans of the assistant turns in the rendered conversation, or None if unknowable."""
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        try:
            before = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
            upto = tok.apply_chat_template(messages[: i + 1], tokenize=False)
        except Exception:
            return None
        if not (full.startswith(upto) and upto.startswith(before)):
            return None
        spans.append((len(before), len(upto)))
    return spans


def _windows(s: Sample, n: int) -> list[Sample]:
    return [
        Sample(s.input_ids[i : i + n], s.labels[i : i + n], s.line)
        for i in range(0, len(s.input_ids), n)
        if any(x != IGNORE for x in s.labels[i + 1 : i + n])
    ]


def _pack(samples: list[Sample], n: int) -> list[Sample]:
    ids = [t for s in samples for t in s.input_ids]
    labels = [t for s in samples for t in s.labels]
    return [
        Sample(ids[i : i + n], labels[i : i + n])
        for i in range(0, len(ids), n)
        if any(x != IGNORE for x in labels[i + 1 : i + n])
    ]


PPL_MAX_LENGTH = 512  # longest evaluation sequence, as `gptctl optimize --max-length` defaults to


def load_eval_records(spec: str) -> list[Record]:
    """Evaluation data, read as `gptctl optimize --eval-data` reads it (.txt: samples separated by blank
    lines; .jsonl: text, prompt/completion or chat records), from a path or pkg:PACKAGE/FILE."""
    from gptctl.model_source import package_data_file

    path = package_data_file(spec) if spec.startswith("pkg:") else Path(spec).expanduser()
    return read_records(path, flag="--eval-data")


def eval_samples(
    tokenizer: Any, records: list[Record], *, vocab_size: int, path: str, max_length: int = PPL_MAX_LENGTH
) -> list[Sample]:
    """Tokenised evaluation sequences, as `gptctl optimize` builds them (same special tokens, same
    labelled positions, samples longer than `max_length` cut into consecutive windows)."""
    samples = tokenize(records, tokenizer, max_length=max_length, packing=False, path=path, for_eval=True).samples
    bad = [s.line for s in samples if max(s.input_ids) >= vocab_size]
    if bad:
        raise BadInput(
            f"{path}:{bad[0]}: the tokenizer produces ids beyond the model's vocabulary ({vocab_size})",
            "the tokenizer and the model do not match",
        )
    return samples
