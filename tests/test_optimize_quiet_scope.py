"""`gptctl optimize` silences library chatter for its own call only: after the command returns, the
process's warnings filters, environment and logger levels are as they were (STYLE.md: noise is
silenced in a scope, never for the whole process)."""

from __future__ import annotations

import json
import logging
import os
import warnings

import pytest
from typer.testing import CliRunner

import gptctl.optimize
from gptctl.cli.app import app

from tiny_models import CORPUS

NAMES = ("TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS")


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in CORPUS) + "\n")
    return path


def _state():
    levels = {n: logging.getLogger(n).level for n in ("transformers", "peft", "accelerate")}
    return list(warnings.filters), {n: os.environ.get(n) for n in NAMES}, levels


def _lora(model, data, out):
    args = ["optimize", "lora", "--model", str(model), "--data", str(data), "--max-steps", "1", "--output", str(out)]
    return CliRunner().invoke(app, [*args, "--json"])


def test_a_real_run_leaves_filters_env_and_levels_as_they_were(tiny_model_factory, data, tmp_path, monkeypatch):
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    model = tiny_model_factory("gpt2")
    before = _state()
    res = _lora(model, data, tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert _state() == before


def test_noise_is_silenced_during_the_call_and_only_then(tiny_model_factory, data, tmp_path, monkeypatch):
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    seen = {}

    def fake_optimize(method, opts, progress=None):
        with warnings.catch_warnings(record=True) as caught:  # keeps the filters the command set
            warnings.warn_explicit("advice", UserWarning, "peft/tuners.py", 1, module="peft.tuners")
            warnings.warn_explicit("a user must see this", UserWarning, "mine.py", 1, module="mine")
        seen["caught"] = [str(w.message) for w in caught]
        seen["env"] = {n: os.environ.get(n) for n in NAMES}
        seen["level"] = logging.getLogger("transformers").getEffectiveLevel()
        return {"metrics": {}}

    monkeypatch.setattr(gptctl.optimize, "optimize", fake_optimize)
    before = _state()
    res = _lora(tiny_model_factory("gpt2"), data, tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert seen["caught"] == ["a user must see this"]
    assert seen["env"] == {"TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    assert seen["level"] >= logging.ERROR
    assert _state() == before
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn_explicit("advice", UserWarning, "peft/tuners.py", 1, module="peft.tuners")
    assert [str(w.message) for w in caught] == ["advice"]


def test_a_users_own_setting_is_kept(tiny_model_factory, data, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    monkeypatch.setattr(gptctl.optimize, "optimize", lambda method, opts, progress=None: {"metrics": {}})
    res = _lora(tiny_model_factory("gpt2"), data, tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
