"""`gptctl run`: YAML recipes that chain select -> optimize -> export, cached, resumable and gated.

    recipe = load_recipe("recipes/quickstart.yaml", ["steps.tune.options.rank=16"])
    report = run_recipe(recipe, dry_run=False)
    report.exit_code  # 0 passed, 1 a gate (or a step) failed, 2 invalid input

Validation (`schema`) imports nothing heavy; each step kind (`steps`) imports its library when it runs.
"""

from gptctl.recipe.runner import RunReport, StepReport, default_workdir, run_recipe
from gptctl.recipe.schema import Recipe, Step, load_recipe, parse_recipe
from gptctl.recipe.steps import KINDS, StepKind, StepRun

__all__ = [
    "KINDS",
    "Recipe",
    "RunReport",
    "Step",
    "StepKind",
    "StepReport",
    "StepRun",
    "default_workdir",
    "load_recipe",
    "parse_recipe",
    "run_recipe",
]
