"""What a study leaves: DIR/front.json, DIR/front/NN.yaml (pinned recipes `gptctl run` reproduces), and
DIR/report.html (a Pareto plot of every trial, feasible or not, with the front highlighted; plotly.js is
inlined, so the page works offline). With no feasible trial, the nearest misses: by how much each gate
failed, closest first.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from gptctl.recipe.schema import Recipe
from gptctl.tune.space import SearchSpace
from gptctl.tune.trial import TrialResult, pin, recipe_yaml

NEAREST_MISSES = 5
RETIMED = "decode_tok_s re-timed"


def _retimed_text(r: dict | None) -> str:
    if not r:
        return ""
    if "skipped" in r:
        return f"not re-timed: {r['skipped']}"
    runs = ", ".join(f"{x:.4g}" for x in r.get("decode_tok_s_runs", []))
    change = f" ({r['change']:+.1%} vs in-study)" if r.get("change") is not None else ""
    return f"{r['decode_tok_s']:.4g} (median of {runs}){change}"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_outputs(
    result, recipe: Recipe, space: SearchSpace, front_numbers: list[int], retimed: dict[int, dict] | None = None
) -> None:
    """Fill `result.front`, `result.nearest_misses` and `result.files`, and write them. `retimed` (trial
    number -> gptctl.tune.retime figures) adds the end-of-study timings beside the in-study ones."""
    retimed = retimed or {}
    out = Path(result.output)
    front = distinct_front(result.trials, front_numbers)
    first = space.objectives[0]
    front.sort(key=lambda t: t.objectives[first.name] * (1 if first.direction == "minimize" else -1))
    base = next((t for t in result.trials if t.baseline), None)
    for old in (out / "front").glob("*.yaml"):
        old.unlink()  # a resumed study's front replaces the last one
    for i, t in enumerate(front):
        path = out / "front" / f"{i:02d}.yaml"
        header = (
            f"Pinned by gptctl tune from {recipe.path or recipe.name}: trial {t.number} of study {result.study}.\n"
            f"values: {json.dumps(t.params)}\nobjectives: {json.dumps(t.objectives)}\n"
            f"Reproduce: gptctl run {path}"
        )
        _atomic_write(path, recipe_yaml(pin(recipe, t.params, f"{recipe.name}-front-{i:02d}"), header))
        result.front.append(
            {
                "index": i,
                "trial": t.number,
                "params": t.params,
                "objectives": t.objectives,
                "recipe": str(path),
                "baseline": t.baseline,
                "repeats": _repeats(result.trials, t),
                "dominates_baseline": bool(base and base.state == "complete" and _dominates(t, base, space)),
                **({"retimed": retimed[t.number]} if t.number in retimed else {}),
            }
        )
    if not front:
        result.nearest_misses = nearest_misses(result.trials)
    summary = {
        "study": result.study,
        "recipe": result.recipe,
        "objectives": {o.name: o.direction for o in space.objectives},
        "front": result.front,
        "baseline": base.to_dict() if base else None,
        "baseline_retimed": retimed.get(base.number) if base else None,
        "nearest_misses": result.nearest_misses,
        "trials": len(result.trials),
        "stop_reason": result.stop_reason,
        "machine": result.machine,
    }
    _atomic_write(out / "front.json", json.dumps(summary, indent=2, default=str) + "\n")
    result.files = {
        "trials": str(out / "trials.jsonl"),
        "front": str(out / "front.json"),
        "report": str(out / "report.html"),
        "journal": str(out / "study.journal"),
    }
    _atomic_write(out / "report.html", render_html(result, space, base))


def _key(t: TrialResult) -> str:
    return json.dumps(t.params, sort_keys=True, default=str)


def distinct_front(trials: list[TrialResult], front_numbers: list[int]) -> list[TrialResult]:
    """The front's trials, one per distinct set of values: a sampler may propose the same values again
    (the repeat is nearly free, every step shared) and Optuna keeps tied trials on the front; the
    earliest stays (the recipe as written, when it is one of them)."""
    by_number = {t.number: t for t in trials}
    kept: dict[str, TrialResult] = {}
    for n in sorted(front_numbers):
        if n in by_number:
            kept.setdefault(_key(by_number[n]), by_number[n])
    return list(kept.values())


def _repeats(trials: list[TrialResult], t: TrialResult) -> list[int]:
    """Later trials with the same values (their figures are the same shared outputs)."""
    return [x.number for x in trials if x.number != t.number and x.state == "complete" and _key(x) == _key(t)]


def _dominates(a: TrialResult, b: TrialResult, space: SearchSpace) -> bool:
    better = False
    for o in space.objectives:
        x, y = a.objectives[o.name], b.objectives[o.name]
        if o.direction == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        better = better or x < y
    return better


def nearest_misses(trials: list[TrialResult], n: int = NEAREST_MISSES) -> list[dict[str, Any]]:
    """The trials closest to passing every gate, each with the gates it failed and by how much."""
    scored = [t for t in trials if t.state in ("complete", "stopped") and t.constraints]
    scored.sort(key=lambda t: t.violation)
    return [
        {
            "trial": t.number,
            "params": t.params,
            "state": t.state,
            "stopped_at": t.stopped_at,
            "violation": round(t.violation, 6),
            "failed": [
                {"gate": g["expr"], "by": round(g["violation"], 6), "detail": g.get("detail"), "error": g.get("error")}
                for g in t.gates
                if g["violation"] > 0
            ],
        }
        for t in scored[:n]
    ]


def _figure(result, space: SearchSpace):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [o.name for o in space.objectives]
    pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))][:3]
    front = {p["trial"] for p in result.front}
    done = [t for t in result.trials if t.state == "complete"]
    groups = [
        ("front", [t for t in done if t.number in front], dict(size=13, color="#d62728", symbol="star")),
        ("feasible", [t for t in done if t.feasible and t.number not in front], dict(size=9, color="#1f77b4")),
        ("infeasible", [t for t in done if not t.feasible], dict(size=8, color="#aaaaaa", symbol="x")),
    ]
    fig = make_subplots(rows=1, cols=max(1, len(pairs)), subplot_titles=[f"{y} vs {x}" for x, y in pairs] or None)
    for col, (x, y) in enumerate(pairs or [("trial", names[0])], start=1):
        for label, trials, marker in groups:
            fig.add_trace(
                go.Scatter(
                    x=[t.number if x == "trial" else t.objectives[x] for t in trials],
                    y=[t.objectives[y] for t in trials],
                    mode="markers",
                    marker=marker,
                    name=label,
                    legendgroup=label,
                    showlegend=col == 1,
                    text=[f"trial {t.number}<br>{html.escape(json.dumps(t.params))}" for t in trials],
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=x, row=1, col=col)
        fig.update_yaxes(title_text=y, row=1, col=col)
    fig.update_layout(title=f"gptctl tune: {result.study} ({len(result.trials)} trials)", height=480)
    return fig


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else (v if isinstance(v, str) else json.dumps(v, default=str))


def render_html(result, space: SearchSpace, base: TrialResult | None) -> str:
    """The offline report page: plot, front, nearest misses, every trial, the machine."""
    plot = _figure(result, space).to_html(include_plotlyjs=True, full_html=False)
    names = [o.name for o in space.objectives]
    front_rows = [
        {
            "#": p["index"],
            "trial": p["trial"],
            **p["objectives"],
            RETIMED: _retimed_text(p.get("retimed")),
            "params": p["params"],
            "recipe": p["recipe"],
        }
        for p in result.front
    ]
    trial_rows = [
        {
            "trial": t.number,
            "state": t.state,
            "feasible": t.feasible,
            **t.objectives,
            "params": t.params,
            "cache hits": t.cache_hits,
            "wall s": round(t.wall_s, 2),
            "note": t.error or "",
        }
        for t in result.trials
    ]
    parts = [
        f"<h1>gptctl tune: {html.escape(result.study)}</h1>",
        f"<p>{len(result.trials)} trials; stopped: {html.escape(result.stop_reason)}. Trial 0 is the recipe as written"
        + (f" ({'feasible' if base.feasible else 'infeasible'})" if base else "")
        + ".</p>",
        plot,
    ]
    if result.front:
        parts += [
            "<h2>Pareto front (feasible)</h2>",
            "<p>Re-timed: each front artifact benchmarked again after the study, one at a time in the benchmark"
            " slot (the median over its benchmark's iterations), beside its in-study figure.</p>",
            _table(front_rows, ["#", "trial", *names, RETIMED, "params", "recipe"]),
        ]
    else:
        miss_rows = [
            {"trial": m["trial"], "violation": m["violation"], "failed gates": m["failed"], "params": m["params"]}
            for m in result.nearest_misses
        ]
        parts += [
            "<h2>No trial passed every gate: nearest misses</h2>",
            _table(miss_rows, ["trial", "violation", "failed gates", "params"]),
        ]
    parts += [
        "<h2>Trials</h2>",
        _table(trial_rows, ["trial", "state", "feasible", *names, "params", "cache hits", "wall s", "note"]),
        "<h2>Machine</h2>",
        f"<pre>{html.escape(json.dumps(result.machine, indent=2))}</pre>",
        "<h2>Search space</h2>",
        f"<pre>{html.escape(json.dumps(result.space, indent=2, default=str))}</pre>",
    ]
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
    )
    title = f"gptctl tune {html.escape(result.study)}"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )
