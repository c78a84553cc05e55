"""Logging: configured once by the CLI (--verbose/--quiet, stderr only); third-party noise silenced in a scope."""

import json
import logging

import pytest
from typer.testing import CliRunner

from gptctl import logs
from gptctl.cli import common
from gptctl.cli.app import app

runner = CliRunner()
LEGACY = "You are using the default legacy behaviour of the <class 'LlamaTokenizerFast'>. This is expected"


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GPTCTL_CATALOG", raising=False)
    root, own = logging.getLogger(), logging.getLogger("gptctl")
    before = (root.level, list(root.handlers), own.level)
    yield
    root.setLevel(before[0])
    root.handlers[:] = before[1]
    own.setLevel(before[2])


def _select_that_logs(monkeypatch):
    """`gptctl select` whose library logs one record per level, as a library module does."""
    import gptctl.selection as selection

    real = selection.select_models

    def logging_select(options, *a, **kw):
        log = logging.getLogger("gptctl.selection.core")
        log.debug("debug detail")
        log.info("info line")
        log.warning("a warning the user must see")
        return real(options, *a, **kw)

    monkeypatch.setattr(selection, "select_models", logging_select)


@pytest.mark.parametrize(
    "flags, shown, hidden",
    [
        ([], ["info line", "warning: a warning the user must see"], ["debug detail"]),
        (["--verbose"], ["debug detail", "info line", "a warning the user must see"], []),
        (["--quiet"], ["a warning the user must see"], ["info line", "debug detail"]),
    ],
)
def test_log_records_go_to_stderr_by_verbosity(monkeypatch, flags, shown, hidden):
    _select_that_logs(monkeypatch)
    res = runner.invoke(app, [*flags, "select", "--top", "1", "--json"])
    assert res.exit_code == 0, res.stderr
    for text in shown:
        assert text in res.stderr
    for text in hidden:
        assert text not in res.stderr
    json.loads(res.stdout)  # stdout stays one JSON document
    assert "info line" not in res.stdout and "must see" not in res.stdout


def test_configure_installs_one_handler_however_often_it_runs():
    for verbosity in (0, 1, 0):
        logs.configure(verbosity, common.ConsoleLogHandler())
    assert sum(getattr(h, "_gptctl", False) for h in logging.getLogger().handlers) == 1
    assert logging.getLogger("gptctl").level == logging.INFO


def test_quiet_raises_named_levels_and_restores_them():
    ort = logging.getLogger("onnxruntime.quantization.test")
    ort.setLevel(logging.NOTSET)
    with logs.quiet("onnxruntime.quantization.test", level=logging.ERROR):
        assert not ort.isEnabledFor(logging.WARNING) and ort.isEnabledFor(logging.ERROR)
    assert ort.level == logging.NOTSET


def test_quiet_drops_known_noise_but_keeps_other_warnings(caplog):
    tok_logger = logging.getLogger("transformers.models.llama.tokenization_llama_fast")
    with caplog.at_level(logging.WARNING, logger=tok_logger.name):
        propagate, tok_logger.propagate = tok_logger.propagate, True  # transformers may stop propagation
        try:
            with logs.quiet():
                tok_logger.warning(LEGACY)
                tok_logger.warning("the tokenizer file is truncated")
            tok_logger.warning(LEGACY + " (outside the scope)")
        finally:
            tok_logger.propagate = propagate
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["the tokenizer file is truncated", LEGACY + " (outside the scope)"]


def test_quiet_turns_transformers_and_gguf_progress_bars_off_in_scope_only():
    pytest.importorskip("gguf")
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    original = gguf_utils.tqdm
    with logs.quiet():
        assert not hf_logging.is_progress_bar_enabled()
        bar = gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors...")
        assert bar.disable and list(bar) == [0, 1, 2]
    assert hf_logging.is_progress_bar_enabled() and gguf_utils.tqdm is original


def test_quiet_restores_after_an_error():
    named = logging.getLogger("some.noisy.lib")
    named.setLevel(logging.INFO)
    with pytest.raises(RuntimeError), logs.quiet("some.noisy.lib"):
        raise RuntimeError("load failed")
    assert named.level == logging.INFO
    assert not logging.getLogger("transformers.models.llama.tokenization_llama_fast").filters
