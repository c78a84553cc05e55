"""The shipped tune recipe's search block validates against the real step options; the sampler
registry matches the CLI's choices; durations parse; `tune --dry-run` loads no Optuna."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gptctl.recipe import load_recipe
from gptctl.tune import parse_duration, parse_search

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_shipped_tune_recipe_validates_with_the_real_options():
    recipe = load_recipe(RECIPES / "quickstart-tune.yaml")
    space = parse_search(recipe)
    assert [p.path for p in space.params] == [
        "prune.options.ratio",
        "prune.options.method",
        "tune.options.rank",
        "tune.options.lr",
        "ship.options.quantize",
        "ship.options.block_size",
        "ship.options.int8_share",
    ]
    assert {o.name: o.direction for o in space.objectives} == {
        "ppl": "minimize",
        "decode_tok_s": "maximize",
        "size_mb": "minimize",
    }
    # Trial 0 is the quickstart as written: the tuned recipe's values are the quickstart's.
    quick = load_recipe(RECIPES / "quickstart.yaml")
    for path, value in space.baseline().items():
        step, _, option = path.split(".", 2)
        assert quick.step(step).options[option] == value, path
        assert next(p for p in space.params if p.path == path).contains(value)


def test_sampler_registry_is_the_cli_choice_list():
    from gptctl.cli.tune import SAMPLER_NAMES
    from gptctl.tune.study import SAMPLERS

    assert tuple(SAMPLERS) == SAMPLER_NAMES


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("90s", 90), ("1h30m", 5400), ("45", 45), ("2h", 7200)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "30x", "m"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_dry_run_imports_no_optuna():
    code = (
        "import sys, json\n"
        "from gptctl.cli.app import app\n"
        "from typer.testing import CliRunner\n"
        f"r = CliRunner().invoke(app, ['tune', {str(RECIPES / 'quickstart-tune.yaml')!r}, '--dry-run', '--json'])\n"
        "mods = sorted({m.split('.')[0] for m in sys.modules})\n"
        "print(json.dumps({'rc': r.exit_code, 'out': r.stdout, 'mods': mods}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["rc"] == 0, proc.stderr
    assert json.loads(data["out"])["size"] is None  # a continuous learning rate: no finite size
    assert not {"optuna", "plotly", "ray", "torch"} & set(data["mods"])
