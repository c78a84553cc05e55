"""`gptctl --help`, `gptctl select ...` and `gptctl catalog ...` never import the heavy stack.

Each command runs in a fresh interpreter; at exit it reports which modules it had imported.
"""

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "peft", "optimum", "onnxruntime", "optuna", "ray", "plotly")

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
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GPTCTL_NO_CACHE": "1", **env},
    )
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES:")]
    assert line, proc.stderr
    return proc.returncode, {m.split(".")[0] for m in json.loads(line[-1][len("MODULES:") :])}


@pytest.mark.parametrize(
    "args, rc",
    [
        (["--help"], 0),
        (["select", "--domain", "medical", "--max-params", "1b"], 0),
        (["select", "--domain", "medical", "--max-params", "1b", "--exportable", "--json"], 1),
        (["select", "--license", "mit", "--explain", "--top", "3"], 0),
        (["catalog", "list"], 0),
        (["catalog", "list", "--domain", "code", "--json"], 0),
        (["catalog", "show", "microsoft/biogpt"], 0),
        (["catalog", "validate", "builtin"], 0),
        (["select", "--help"], 0),
        (["tune", "--help"], 0),
    ],
)
def test_light_commands_do_not_import_the_heavy_stack(args, rc):
    code, modules = imported_by(args)
    assert code == rc
    assert not modules & set(HEAVY), f"gptctl {' '.join(args)} imported {sorted(modules & set(HEAVY))}"
    # pydantic alone is ~0.15 s of start-up (import + model build): select's options are LightOptions.
    assert "pydantic" not in modules, f"gptctl {' '.join(args)} imported pydantic"


def test_select_and_catalog_cli_modules_are_light_at_import():
    # The app imports every CLI module at start; these two must not pull pydantic or yaml in.
    code = "import json, sys, gptctl.cli.select, gptctl.cli.catalog; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    top = set(json.loads(out))
    assert not top & {"pydantic", "yaml", *HEAVY}, sorted(top & {"pydantic", "yaml", *HEAVY})


def full_modules(args):
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, timeout=120)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES:")]
    assert line, proc.stderr
    return proc.returncode, set(json.loads(line[-1][len("MODULES:") :])), proc.stdout


def test_help_skips_rich_markdown_and_traceback():
    # typer.rich_utils imports both at module level but gptctl's help never uses them (~90 ms).
    code, modules, out = full_modules(["--help"])
    assert code == 0 and "select" in out
    assert "typer.rich_utils" in modules
    assert not modules & {"rich.markdown", "rich.traceback", "markdown_it", "pygments"}, sorted(
        modules & {"rich.markdown", "rich.traceback", "markdown_it", "pygments"}
    )


def test_stand_ins_leave_the_real_modules_importable():
    # After the help renderer is loaded, importing rich.markdown / rich.traceback gives the real
    # modules, and typer's stand-ins build real objects.
    code = (
        "from gptctl.cli.app import _import_typer_rich_utils as f; f()\n"
        "import rich.markdown, rich.traceback, typer.rich_utils as ru\n"
        "assert rich.markdown.Markdown.__module__ == 'rich.markdown', rich.markdown.Markdown\n"
        "assert type(ru.Markdown('*x*')).__module__ == 'rich.markdown'\n"
        "try:\n    1/0\nexcept ZeroDivisionError as e:\n    tb = ru.Traceback.from_exception(type(e), e, e.__traceback__)\n"  # noqa: E501
        "assert type(tb).__module__ == 'rich.traceback'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_root_help_imports_no_command_module():
    # Commands are imported when they run; the root help lists them from static one-line helps.
    code, modules, out = full_modules(["--help"])
    assert code == 0
    loaded = {m for m in modules if m.startswith("gptctl.cli.") and m not in ("gptctl.cli.app", "gptctl.cli.common")}
    assert loaded == set(), sorted(loaded)
    for name in ("select", "export", "bench", "run", "tune", "catalog", "optimize"):
        assert name in out


def test_static_one_line_helps_match_the_commands():
    import importlib

    from gptctl.cli.app import LAZY_COMMANDS, LAZY_GROUPS

    def first_line(doc):
        return " ".join(doc.strip().split("\n\n")[0].split())

    for name, (module, func, doc_from, short) in LAZY_COMMANDS.items():
        mod = importlib.import_module(module)
        doc = mod.__doc__ if doc_from == "module" else getattr(mod, func).__doc__
        assert first_line(doc).startswith(short), (name, short, first_line(doc))
    for name, (module, short) in LAZY_GROUPS.items():
        real = importlib.import_module(module).app.info.help
        assert first_line(real).startswith(short), (name, short, first_line(real))
