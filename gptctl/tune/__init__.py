"""`gptctl tune`: an Optuna search over a recipe's options, the recipe's gates as constraints.

    recipe = load_recipe("recipes/quickstart-tune.yaml")
    space = parse_search(recipe)            # the `search:` block, checked (file:line on errors)
    result = tune_recipe(recipe, space, TuneOptions(output=Path("runs/quickstart-tune/tune"), trials=20))
    result.front                            # feasible, non-dominated trials; each a pinned recipe

Every trial is the recipe runner's own run (gptctl.recipe.run_recipe) in DIR/trials/NNNN/, sharing
step outputs through DIR/cache/ (content-addressed by the runner's step fingerprint); with
`TuneOptions(backend="ray")` the trials run on Ray Tune (gptctl.tune.ray_backend). At the end the front
is re-timed (gptctl.tune.retime). Optuna, plotly and ray are imported only when a study runs;
`optuna-dashboard DIR/study.journal` shows the study live.
"""

from gptctl.tune.run import TuneOptions, TuneResult, parse_duration, tune_recipe
from gptctl.tune.space import Objective, Param, SearchSpace, parse_search
from gptctl.tune.trial import TrialResult

__all__ = [
    "Objective",
    "Param",
    "SearchSpace",
    "TrialResult",
    "TuneOptions",
    "TuneResult",
    "parse_duration",
    "parse_search",
    "tune_recipe",
]
