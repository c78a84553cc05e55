"""`gptctl --help`, `gptctl select ...` and `gptctl catalog ...` never import the heavy stack.

Each command runs in a fresh interpreter; at exit it reports which modules it had imported.
"""

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "peft", "optimum", "onnxruntime")

PROBE = r"""
import atexit, json, sys
def report():
    sys.__stderr__.write("\nMODULES:" + json.dumps(sorted(sys.modules)) + "\n")
atexit.register(report)
sys.argv = ["gptctl"] + json.loads(sys.argv[1])
from gptctl.cli.app import main
main()
"""


def imported_by(args, **env):
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "GPTCTL_NO_CACHE": "1", **env})
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES:")]
    assert line, proc.stderr
    return proc.returncode, {m.split(".")[0] for m in json.loads(line[-1][len("MODULES:"):])}


@pytest.mark.parametrize("args, rc", [
    (["--help"], 0),
    (["select", "--domain", "medical", "--max-params", "1b"], 0),
    (["select", "--domain", "medical", "--max-params", "1b", "--exportable", "--json"], 1),
    (["select", "--license", "mit", "--explain", "--top", "3"], 0),
    (["catalog", "list"], 0),
    (["catalog", "list", "--domain", "code", "--json"], 0),
    (["catalog", "show", "microsoft/biogpt"], 0),
    (["catalog", "validate", "builtin"], 0),
    (["select", "--help"], 0),
])
def test_light_commands_do_not_import_the_heavy_stack(args, rc):
    code, modules = imported_by(args)
    assert code == rc
    assert not modules & set(HEAVY), f"gptctl {' '.join(args)} imported {sorted(modules & set(HEAVY))}"


def test_select_and_catalog_cli_modules_are_light_at_import():
    # The app imports every CLI module at start; these two must not pull pydantic or yaml in.
    code = "import json, sys, gptctl.cli.select, gptctl.cli.catalog; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    top = set(json.loads(out))
    assert not top & {"pydantic", "yaml", *HEAVY}, sorted(top & {"pydantic", "yaml", *HEAVY})
