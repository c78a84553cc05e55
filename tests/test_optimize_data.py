"""Reading, checking, splitting and tokenising optimize data; options validation."""

from __future__ import annotations

import json

import pytest

from gptctl.errors import BadInput
from gptctl.optimize import options_model
from gptctl.optimize.data import IGNORE, read_records, split_records, tokenize
from gptctl.options import parse_options


@pytest.fixture(scope="module")
def tokenizer(tiny_model_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_factory("llama"))


def _jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_formats_and_labels(tmp_path, tokenizer):
    p = _jsonl(
        tmp_path / "d.jsonl",
        [
            {"text": "The clinic opens at nine."},
            {"prompt": "Question: when does the clinic open?\nAnswer:", "completion": " at nine"},
            {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "The doctor is in."}]},
            "",  # blank lines are skipped
        ],
    )
    records = read_records(p)
    assert [r.kind for r in records] == ["text", "completion", "chat"] and [r.line for r in records] == [1, 2, 3]
    data = tokenize(records, tokenizer, max_length=128, packing=False, path=str(p))
    text, comp, chat = data.samples
    assert text.labels == text.input_ids
    prompt_len = len(tokenizer(records[1].prompt)["input_ids"])
    assert comp.labels[:prompt_len] == [IGNORE] * prompt_len and all(x != IGNORE for x in comp.labels[prompt_len:])
    # Chat: loss on the assistant turn only.
    learned = tokenizer.decode([t for t, lab in zip(chat.input_ids, chat.labels, strict=False) if lab != IGNORE])
    assert "doctor" in learned and "hello" not in learned
    assert data.formats == {"text": 1, "completion": 1, "chat": 1}


def test_txt_blocks_and_seeded_split(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("first note\nsecond line\n\n\nthird note\n\nfourth\n\nfifth\n")
    records = read_records(p)
    assert [r.text for r in records] == ["first note\nsecond line", "third note", "fourth", "fifth"]
    assert [r.line for r in records] == [1, 5, 7, 9]
    train, held = split_records(records, 0.25, seed=3, path=str(p))
    assert len(held) == 1 and len(train) == 3 and not {r.line for r in held} & {r.line for r in train}
    assert split_records(records, 0.25, seed=3, path=str(p))[1][0].line == held[0].line


def test_packing_fills_sequences_and_max_length_skips(tmp_path, tokenizer):
    p = _jsonl(tmp_path / "d.jsonl", [{"text": "The patient was given aspirin."}] * 20 + [{"text": "word " * 100}])
    records = read_records(p)
    plain = tokenize(records, tokenizer, max_length=32, packing=False, path=str(p))
    assert plain.skipped_too_long == 1 and len(plain.samples) == 20
    packed = tokenize(records, tokenizer, max_length=32, packing=True, path=str(p))
    assert all(len(s.input_ids) == 32 for s in packed.samples[:-1]) and packed.tokens == sum(
        len(s.input_ids) for s in tokenize(records, tokenizer, max_length=10_000, packing=False, path=str(p)).samples
    )
    evaluation = tokenize(records, tokenizer, max_length=32, packing=False, path=str(p), for_eval=True)
    assert evaluation.skipped_too_long == 0 and max(len(s.input_ids) for s in evaluation.samples) == 32


BAD_DATA = {
    "bad_json": (['{"text": "ok"}'] * 16 + ['{"text": oops}'], ":17: not valid JSON"),
    "missing_field": ([{"text": "ok"}, {"txt": "typo"}], ":2: missing field"),
    "half_pair": ([{"prompt": "p"}], ":1: missing field 'completion'"),
    "wrong_type": ([{"text": 42}], ":1: field 'text' must be a string"),
    "empty_text": ([{"text": "  "}], ":1: field 'text' is empty"),
    "not_object": (["[1, 2]"], ":1: expected a JSON object"),
    "no_assistant": ([{"messages": [{"role": "user", "content": "hi"}]}], ":1: no 'assistant' message"),
    "bad_message": ([{"messages": [{"role": "user"}]}], ":1: messages[0]"),
    "empty": ([""], "is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_names_file_and_line(case, tmp_path):
    rows, expected = BAD_DATA[case]
    p = _jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(BadInput) as err:
        read_records(p)
    assert str(p) in err.value.message and expected in err.value.message


def test_bad_files(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        read_records(tmp_path / "missing.jsonl")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(BadInput, match="unsupported file type"):
        read_records(tmp_path / "d.csv")
    (tmp_path / "d.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(BadInput, match=r"d.jsonl:2: not UTF-8"):
        read_records(tmp_path / "d.jsonl")


def test_every_sample_too_long(tmp_path, tokenizer):
    p = _jsonl(tmp_path / "d.jsonl", [{"text": "word " * 50}, {"text": "word " * 60}])
    with pytest.raises(BadInput, match=r"every sample is longer than --max-length 16 tokens \(the shortest, line 1"):
        tokenize(read_records(p), tokenizer, max_length=16, packing=False, path=str(p))


@pytest.mark.parametrize(
    "method,options,expected",
    [
        ("prune", {"ratio": 1.0}, "less than 1"),
        ("prune", {"ratio": 0}, "greater than 0"),
        ("prune", {}, "--ratio is required"),
        ("prune", {"structure": "4:2"}, "N:M with 0 < N < M"),
        ("prune", {"structure": "2:4", "ratio": 0.3}, "means a ratio of 0.5"),
        ("prune", {"ratio": 0.5, "method": "wanda"}, "calibrates on --data"),
        ("prune", {"ratio": 0.5, "method": "nope"}, "'magnitude' or 'wanda'"),
        ("prune", {"ratio": 0.5, "scope": "global", "structure": "2:4"}, "use --scope layer"),
        ("prune", {"ratio": 0.5, "eval_data": "a.txt", "eval_split": 0.1, "data": "b.txt"}, "not both"),
        ("lora", {"data": "d.txt", "rank": 0}, "greater than or equal to 1"),
        ("lora", {"data": "d.txt", "warmup": 2.5}, "whole number of steps"),
        ("lora", {"data": "d.txt", "lr": 1e-3, "rnak": 4}, "did you mean 'rank'"),
        ("lora", {}, "data"),
        ("prompt-tuning", {"data": "d.txt", "init_text": " "}, "--init-text is empty"),
    ],
)
def test_option_problems(method, options, expected):
    with pytest.raises(BadInput) as err:
        parse_options(options_model(method), {"model": "m", "output": "o", **options})
    assert expected in " ".join([err.value.message, *err.value.details])


def test_target_modules_accepts_a_comma_list():
    o = parse_options(
        options_model("lora"), {"model": "m", "output": "o", "data": "d", "target_modules": "q_proj, v_proj"}
    )
    assert o.target_modules == ["q_proj", "v_proj"]
    p = parse_options(options_model("prune"), {"model": "m", "output": "o", "structure": "2:4"})
    assert p.sparsity == 0.5 and p.n_m == (2, 4)
