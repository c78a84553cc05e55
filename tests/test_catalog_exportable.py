"""The static list behind `select --exportable` must equal optimum's own ONNX task registry.

This is the one catalog test that imports optimum (and with it transformers/torch); the select code
never does. It runs in a subprocess so the heavy import does not leak into other tests.
"""

import importlib.util
import json
import subprocess
import sys

import pytest

from gptctl.catalog import EXPORTABLE_ARCHITECTURES, is_exportable, load_catalogs

PROBE = """
import json, warnings
warnings.filterwarnings("ignore")
import optimum.exporters.onnx.model_configs  # registers the ONNX configs with the TasksManager
from optimum.exporters.tasks import TasksManager
names = TasksManager.get_supported_model_type_for_task("text-generation-with-past", exporter="onnx")
print(json.dumps(sorted(names)))
"""


def test_static_list_matches_optimum_registry():
    if importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.exporters.onnx") is None:
        pytest.skip("optimum-onnx is not installed")
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    registry = {n.replace("-", "_") for n in json.loads(proc.stdout.strip().splitlines()[-1])}
    assert registry, "optimum reported no text-generation-with-past architectures"
    missing, extra = registry - EXPORTABLE_ARCHITECTURES, EXPORTABLE_ARCHITECTURES - registry
    assert not missing and not extra, (
        f"update gptctl/catalog/exportable.py: optimum supports but the list lacks {sorted(missing)}; "
        f"the list has but optimum does not support {sorted(extra)}"
    )


def test_is_exportable_normalises_spelling_and_rejects_unknown():
    assert is_exportable("llama") and is_exportable("gpt_neox") and is_exportable("gpt-neox")
    assert is_exportable("blenderbot-small") and is_exportable("blenderbot_small")
    assert not is_exportable("biogpt") and not is_exportable(None) and not is_exportable("mobilellm")


def test_bundled_architectures_split_as_expected():
    cat = load_catalogs()
    exportable = {e.architecture for e in cat.entries if is_exportable(e.architecture)}
    assert {"llama", "qwen2", "gpt2", "gpt_neox", "opt", "mistral"} <= exportable
    assert "biogpt" not in exportable
