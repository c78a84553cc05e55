"""benchmarks/bench_peers.py: argument parsing and the exit when the optional llama.cpp extra is missing."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_peers.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_peers", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_arguments_parse_with_their_defaults():
    bench = _load()
    args = bench.parse_args(["--rounds", "2", "--tokens", "16", "--gptctl-methods", "int4"])
    assert (args.rounds, args.tokens, args.prompt_tokens, args.threads) == (2, 16, 32, 2)
    assert args.gptctl_methods == "int4" and args.llama_types.split(",") == list(bench.LLAMA_TYPES)
    with pytest.raises(SystemExit):
        bench.parse_args(["--rounds", "0"])


def test_missing_llama_cpp_exits_2_with_the_install_line(tmp_path):
    # A sitecustomize that hides llama_cpp from the import system, as on a machine without the extra.
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util, sys\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a, **k: None if name == 'llama_cpp' else _find(name, *a, **k)\n"
        "sys.modules['llama_cpp'] = None\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "1"], capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert "pip install" in done.stderr and "peers" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
