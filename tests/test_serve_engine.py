"""The serving engine called directly (no HTTP): continuous batching against batch-1 greedy, join/leave
mid-batch, cancel, stop ids, backpressure, the batching self-check; and the text side (stop strings,
UTF-8), artifact resolution, fingerprints and the light tokenizer."""

import itertools
import json
import shutil
import time

import numpy as np
import pytest
from serve_support import SlowSession, exported_llama

from gptctl.errors import BadInput


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return exported_llama(tmp_path_factory)


@pytest.fixture(scope="module")
def lm(artifact):
    from gptctl.runtime.session import OrtCausalLM

    return OrtCausalLM.from_path(artifact / "model.onnx")[0]


class Recorder:
    def __init__(self):
        self.rows, self.reasons = [], []

    def step(self, rows):
        self.rows.append(rows)

    def first_token(self, seconds):
        pass

    def inter_token(self, seconds):
        pass

    def finished(self, reason):
        self.reasons.append(reason)


def make_engine(lm, **kw):
    from gptctl.serve.engine import Engine

    return Engine(lm, context_window=128, **kw)


def greedy(lm, prompt, n):
    return lm.greedy(np.array([prompt], dtype=np.int64), n)[0].tolist()


PROMPTS = [[5, 17], [9, 3, 27, 81, 11], [31, 7, 19, 5, 53, 12, 8, 44, 70], list(range(40, 54))]


def test_concurrent_prompts_of_different_lengths_equal_their_batch1_greedy(lm):
    rec = Recorder()
    engine = make_engine(lm, max_batch=4, observer=rec)
    try:
        assert engine.batching, engine.batching_reason
        lengths = [12, 7, 15, 9]
        with engine._cond:  # all four wait together, however slowly this thread runs on a loaded machine
            handles = [engine.add_request(p, n) for p, n in zip(PROMPTS, lengths, strict=True)]
        outputs = [list(h) for h in handles]
    finally:
        engine.stop()
    for prompt, n, out, h in zip(PROMPTS, lengths, outputs, handles, strict=True):
        assert out == greedy(lm, prompt, n), prompt
        assert h.finish_reason == "length"
    assert len({tuple(o) for o in outputs}) == len(outputs)  # the model does not just repeat itself
    assert max(rec.rows) >= 3, rec.rows  # the rows really decoded together


def test_rows_join_and_leave_a_running_batch(lm):
    lm.session = SlowSession(lm.session, 0.004)
    rec = Recorder()
    engine = make_engine(lm, max_batch=4, observer=rec)
    try:
        long = engine.add_request(PROMPTS[2], 30)
        it = iter(long)
        first = [next(it) for _ in range(5)]
        short = engine.add_request(PROMPTS[0], 4)  # joins mid-batch, leaves before the long one ends
        short_out = list(short)
        long_out = first + list(it)
    finally:
        engine.stop()
        lm.session = lm.session._session
    assert short_out == greedy(lm, PROMPTS[0], 4)
    assert long_out == greedy(lm, PROMPTS[2], 30)
    two = [i for i, r in enumerate(rec.rows) if r == 2]
    assert two and rec.rows[0] == 1 and rec.rows[-1] == 1, rec.rows  # 1 row, then 2, then back to 1
    assert two[-1] - two[0] + 1 == len(two) <= 4


def test_cancel_frees_the_row_before_the_next_step(lm):
    lm.session = SlowSession(lm.session, 0.005)
    engine = make_engine(lm, max_batch=2)
    try:
        handle = engine.add_request(PROMPTS[1], 100)
        it = iter(handle)
        [next(it) for _ in range(3)]
        handle.cancel()
        steps_at_cancel = engine.steps
        rest = list(it)
        deadline = time.monotonic() + 2
        while engine.stats().running and time.monotonic() < deadline:
            time.sleep(0.005)
        stats = engine.stats()
    finally:
        engine.stop()
        lm.session = lm.session._session
    assert handle.finish_reason == "cancelled"
    assert len(rest) <= 1 and len(handle.tokens) < 100
    assert stats.running == 0 and stats.steps - steps_at_cancel <= 1


def _admitted_while_decoding(lm, lengths, **kw):
    """Row counts per decode step (runs of equal counts merged) when three requests arrive at once while
    one long request decodes, and the outputs of the three."""
    lm.session = SlowSession(lm.session, 0.003)
    rec = Recorder()
    engine = make_engine(lm, max_batch=4, observer=rec, **kw)
    try:
        long = engine.add_request(PROMPTS[3], 40)
        it = iter(long)
        [next(it) for _ in range(3)]
        # Holding the engine's lock, all three are waiting when its thread next looks (no race on timing).
        with engine._cond:
            handles = [engine.add_request(p, n) for p, n in zip(PROMPTS[:3], lengths, strict=True)]
        outputs = [list(h) for h in handles]
        list(it)
    finally:
        engine.stop()
        lm.session = lm.session._session
    assert outputs == [greedy(lm, p, n) for p, n in zip(PROMPTS[:3], lengths, strict=True)]
    return [rows for rows, _ in itertools.groupby(rec.rows)]


def test_a_large_budget_prefills_all_waiting_requests_before_the_next_decode_step(lm):
    # One prefill per step makes the third arrival wait behind two prefills and two decode steps: 1, 2, 3, 4.
    assert _admitted_while_decoding(lm, [6, 6, 6], prefill_budget=256) == [1, 4, 1]


def test_by_default_one_prefill_runs_per_decode_step(lm):
    # The measured default (engine.PREFILL_BUDGET): arrivals are staggered one decode step apart.
    assert _admitted_while_decoding(lm, [6, 6, 6])[:4] == [1, 2, 3, 4]


def test_the_prefill_budget_defers_prompts_that_do_not_fit_to_the_next_step(lm):
    # Prompts of 2, 5 and 9 tokens with a budget of 7: the first two in one round, the third one step later.
    runs = _admitted_while_decoding(lm, [6, 6, 6], prefill_budget=7)
    assert runs[:3] == [1, 3, 4], runs
    # A prompt longer than the budget still goes (alone), or it would never run.
    assert _admitted_while_decoding(lm, [6, 6, 6], prefill_budget=1)[:4] == [1, 2, 3, 4]


def test_a_stop_id_ends_the_request_without_emitting_it(lm):
    ref = greedy(lm, PROMPTS[3], 8)
    stop = ref[3]
    cut = ref.index(stop)
    engine = make_engine(lm, max_batch=2)
    try:
        handle = engine.add_request(PROMPTS[3], 8, stop_ids=[stop])
        out = list(handle)
    finally:
        engine.stop()
    assert out == ref[:cut] and handle.finish_reason == "stop"


def test_seeded_sampling_is_reproducible_and_the_same_batched(lm):
    from gptctl.runtime.sampling import SamplingParams

    params = SamplingParams(temperature=0.9, top_p=0.95, seed=7)
    engine = make_engine(lm, max_batch=3)
    try:
        alone = list(engine.add_request(PROMPTS[1], 10, params))
        handles = [
            engine.add_request(PROMPTS[1], 10, params),
            engine.add_request(PROMPTS[0], 10, params),
            engine.add_request(PROMPTS[1], 10, SamplingParams(temperature=0.9, seed=8)),
        ]
        batched, _, other_seed = [list(h) for h in handles]
    finally:
        engine.stop()
    assert batched == alone
    assert other_seed != alone


def test_queue_full_past_max_batch_plus_max_queued(lm):
    from gptctl.serve.engine import QueueFull

    lm.session = SlowSession(lm.session, 0.005)
    engine = make_engine(lm, max_batch=1, max_queued=1)
    try:
        a = engine.add_request(PROMPTS[0], 50)
        b = engine.add_request(PROMPTS[1], 2)
        with pytest.raises(QueueFull):
            engine.add_request(PROMPTS[2], 2)
        a.cancel()
        assert list(b) == greedy(lm, PROMPTS[1], 2)  # the queued one runs once the row is free
    finally:
        engine.stop()
        lm.session = lm.session._session


def test_requests_past_the_context_window_are_refused(lm):
    engine = make_engine(lm, max_batch=2)
    try:
        with pytest.raises(BadInput, match="context window"):
            engine.add_request(list(range(100)), 29)
        with pytest.raises(BadInput):
            engine.add_request([], 4)
        assert list(engine.add_request(list(range(100)), 28))  # exactly 128 fits
    finally:
        engine.stop()


def test_a_failed_batching_self_check_turns_batching_off(lm, monkeypatch):
    import gptctl.runtime.batch as batch

    monkeypatch.setattr(batch, "check_batching", lambda lm, prompts, **kw: (False, "row 1 token 2 differs"))
    rec = Recorder()
    engine = make_engine(lm, max_batch=4, observer=rec)
    try:
        assert not engine.batching and engine.batching_reason == "row 1 token 2 differs"
        assert engine.stats().max_batch == 1
        handles = [engine.add_request(p, 5) for p in PROMPTS[:3]]
        outputs = [list(h) for h in handles]
    finally:
        engine.stop()
    assert outputs == [greedy(lm, p, 5) for p in PROMPTS[:3]]
    assert set(rec.rows) == {1}


def test_the_real_self_check_passes_on_the_tiny_llama(lm):
    engine = make_engine(lm, max_batch=4)
    engine.stop()
    assert engine.batching, engine.batching_reason
    assert "lengths [3, 7, 12]" in engine.batching_reason


# -- text: incremental detokenization and stop strings -------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(artifact):
    from gptctl.serve.tokenizer import LightTokenizer

    return LightTokenizer(artifact)


TEXT = "The doctor listened to the heart. Héllo wörld 日本語 and lungs"


def test_text_stream_releases_exactly_the_full_decode(tokenizer):
    from gptctl.serve.detok import TextStream

    ids = tokenizer(TEXT)["input_ids"]
    stream = TextStream(tokenizer)
    parts = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(parts) == TEXT == tokenizer.decode(ids)
    assert all("\ufffd" not in p for p in parts)  # a split multi-byte character waits for its last byte


@pytest.mark.parametrize(
    "stop, expected",
    [
        (["heart"], "The doctor listened to the "),
        (["日本", "zzz"], "The doctor listened to the heart. Héllo wörld "),
        (["lungs!"], TEXT),  # a prefix of a stop string that never completes is released at the end
    ],
)
def test_text_stream_cuts_before_a_stop_string(tokenizer, stop, expected):
    from gptctl.serve.detok import TextStream

    stream = TextStream(tokenizer, stop)
    out = ""
    for i in tokenizer(TEXT)["input_ids"]:
        out += stream.push(i)
        assert not any(s in out for s in stop)
        if stream.stopped:
            break
    out += stream.finish()
    assert out == expected
    assert stream.stopped == (expected != TEXT)


def test_light_tokenizer_matches_transformers(artifact, tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(artifact))
    for text in ("The doctor", TEXT + " <|endoftext|> x", " leading space"):
        assert tokenizer(text)["input_ids"] == tok(text)["input_ids"]
        ids = tok(text)["input_ids"]
        assert tokenizer.decode(ids) == tok.decode(ids, skip_special_tokens=True)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": TEXT}]
    want = list(tok.apply_chat_template(messages, add_generation_prompt=True))
    assert tokenizer.apply_chat_template(messages) == want
    assert len(tokenizer) == len(tok) and tokenizer.eos_token_id == tok.eos_token_id


# -- artifacts ------------------------------------------------------------------------------------


def test_resolve_artifact_accepts_an_export_or_a_run_dir_with_one(artifact, tmp_path):
    from gptctl.serve.versions import resolve_artifact

    assert resolve_artifact(artifact) == artifact
    run = tmp_path / "run"
    (run / "select").mkdir(parents=True)
    shutil.copytree(artifact, run / "export")
    assert resolve_artifact(run) == run / "export"
    shutil.copytree(artifact, run / "export-int4")
    with pytest.raises(BadInput, match="2 export steps"):
        resolve_artifact(run)
    with pytest.raises(BadInput, match="no model.onnx"):
        resolve_artifact(run / "select")


def test_fingerprint_follows_the_output_hashes(artifact):
    from gptctl.serve.versions import artifact_fingerprint

    manifest = json.loads((artifact / "gptctl.json").read_text())
    fp = artifact_fingerprint(manifest)
    assert fp.startswith("fp_") and len(fp) == 15 and fp == artifact_fingerprint(json.loads(json.dumps(manifest)))
    changed = json.loads(json.dumps(manifest))
    name = next(iter(changed["outputs"]))
    changed["outputs"][name]["sha256"] = "0" * 64
    assert artifact_fingerprint(changed) != fp
    with pytest.raises(BadInput):
        artifact_fingerprint({"outputs": {}})


def test_load_version_refuses_an_export_without_a_passing_validation(artifact, tmp_path):
    from gptctl.errors import CheckFailed
    from gptctl.serve.versions import LoadOptions, load_version

    bad = tmp_path / "failed"
    shutil.copytree(artifact, bad)
    manifest = json.loads((bad / "gptctl.json").read_text())
    manifest["validation"]["passed"] = False
    (bad / "gptctl.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckFailed, match="validation"):
        load_version(bad, LoadOptions())
    version = load_version(artifact, LoadOptions(max_batch=2))
    try:
        assert version.context_window == 128 and version.stop_ids == (0,)
        assert version.engine.stats().finished == {"length": 1}  # the canary request ran
    finally:
        version.engine.stop()


def test_batching_stays_on_for_a_graph_whose_arithmetic_amplifies_rounding(lm):
    # Like the int4 SmolLM2 artifact (MatMulNBits accuracy_level 4): padded rows move by whole rounding steps,
    # not by float error; a fixed 1e-4 tolerance switched batching off there.
    from test_runtime_batch import AmplifiesRounding

    from gptctl.runtime.session import OrtCausalLM

    engine = make_engine(AmplifiesRounding(lm.session), max_batch=4)
    try:
        assert engine.batching, engine.batching_reason
        assert "rounding noise" in engine.batching_reason and engine.stats().max_batch == 4
    finally:
        engine.stop()
    assert isinstance(lm, OrtCausalLM)
