"""CLI speed benchmark (prints figures; not a timed test).

Targets from issue 2, on this machine:
  * `gptctl --help`: median wall time <= 0.3 s;
  * `gptctl select` over a generated 10,000-entry catalog: <= 1 s wall (interpreter start
    included), and linear in catalog size (measured at 1k, 5k and 10k entries).

The generated catalogs are the bundled entries replicated with new ids and jittered params,
release dates and metrics (seeded, so every run measures the same files). Each size is timed
three ways: a YAML file parsed cold (GPTCTL_NO_CACHE=1), the same YAML file with the parse cache
warm (the loader caches files >= 256 KiB by content hash), and the same catalog as JSON (no cache).

    .venv/bin/python benchmarks/bench_cli.py [--runs 7] [--help-runs 15] [--sizes 1000,5000,10000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HELP_TARGET_S = 0.3
SELECT_TARGET_S = 1.0
SELECT_ARGS = ["select", "--domain", "medical", "--max-params", "1b", "--top", "10", "--json"]


def gptctl_cmd() -> list[str]:
    script = Path(sys.executable).parent / "gptctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gptctl"]


CPU: dict[str, list[float]] = {}  # CPU seconds (user + sys) of each timed child, by label
CPU_WALL: dict[str, list[float]] = {}  # wall seconds, by label
MINS: dict[int, tuple[float, float, float]] = {}


def wall(
    cmd: list[str], env: dict[str, str], runs: int, expect_rc: tuple[int, ...] = (0,), label: str = ""
) -> list[float]:
    """Wall seconds of `runs` runs; the children's CPU seconds go to CPU[label] (less sensitive to a busy machine)."""
    times = []
    for _ in range(runs):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        CPU.setdefault(label, []).append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
        CPU_WALL.setdefault(label, []).append(times[-1])
        if proc.returncode not in expect_rc:
            sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
    return times


def cpu(label: str) -> float:
    return statistics.median(CPU[label])


def generate(n: int, seed: int = 0) -> dict:
    import yaml

    base = yaml.safe_load((ROOT / "gptctl" / "data" / "models.yaml").read_text())["models"]
    rng = random.Random(seed)
    models = []
    for i in range(n):
        src = dict(base[i % len(base)])
        src["id"] = f"gen/{src['id'].split('/')[-1]}-{i:05d}"
        src["params"] = max(1_000_000, int(src["params"] * rng.uniform(0.5, 2.0)))
        if "release" in src or rng.random() < 0.5:
            src["release"] = f"{rng.randint(2019, 2025)}-{rng.randint(1, 12):02d}"
        if src.get("metrics"):
            src["metrics"] = {
                k: round(min(100.0, max(0.0, v + rng.uniform(-5, 5))), 1) for k, v in src["metrics"].items()
            }
        models.append(src)
    return {"models": models}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="timed runs per select configuration")
    ap.add_argument("--help-runs", type=int, default=15, help="timed runs of `gptctl --help`")
    ap.add_argument("--sizes", default="1000,5000,10000")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cmd = gptctl_cmd()
    work = Path(tempfile.mkdtemp(prefix="gptctl-bench-"))
    env = {**os.environ, "GPTCTL_CACHE_DIR": str(work / "cache"), "COLUMNS": "120"}
    env.pop("GPTCTL_CATALOG", None)
    try:
        print(
            f"gptctl: {' '.join(cmd)}   python {sys.version.split()[0]}   cpus {os.cpu_count()}   "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
        print("(wall = what the targets are about; cpu = user+sys of the command, which a busy machine inflates less)")
        wall(cmd + ["--help"], env, 2)  # warm the OS file cache and .pyc files
        t = wall(cmd + ["--help"], env, args.help_runs, label="help")
        med = statistics.median(t)
        print(
            f"\ngptctl --help    median wall {med:.3f} s  (min {min(t):.3f}, max {max(t):.3f}, {len(t)} runs), cpu {cpu('help'):.3f} s  "
            f"target <= {HELP_TARGET_S} s: {'OK' if med <= HELP_TARGET_S else 'MISSED'}"
        )
        t = wall(cmd + SELECT_ARGS, env, max(3, args.runs // 2), label="bundled")
        print(
            f"gptctl {' '.join(SELECT_ARGS)} (bundled 60-entry catalog): median wall {statistics.median(t):.3f} s, cpu {cpu('bundled'):.3f} s"
        )

        print(f"\nselect over generated catalogs: gptctl {' '.join(SELECT_ARGS)} --catalog FILE")
        print(
            f"{'entries':>8} {'file MB':>8} {'yaml cold':>10} {'yaml warm':>10} {'json':>8}   "
            f"{'cpu: cold':>10} {'warm':>6} {'json':>6}   (median seconds, {args.runs} runs)"
        )
        rows = []
        import yaml

        for n in sizes:
            doc = generate(n)
            ypath, jpath = work / f"cat{n}.yaml", work / f"cat{n}.json"
            ypath.write_text(yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False))
            jpath.write_text(json.dumps(doc))
            cold_env = {**env, "GPTCTL_NO_CACHE": "1"}
            cold = statistics.median(
                wall(cmd + SELECT_ARGS + ["--catalog", str(ypath)], cold_env, args.runs, (0, 1), f"cold{n}")
            )
            wall(cmd + SELECT_ARGS + ["--catalog", str(ypath)], env, 1, (0, 1))  # fills the cache
            warm = statistics.median(
                wall(cmd + SELECT_ARGS + ["--catalog", str(ypath)], env, args.runs, (0, 1), f"warm{n}")
            )
            js = statistics.median(
                wall(cmd + SELECT_ARGS + ["--catalog", str(jpath)], cold_env, args.runs, (0, 1), f"json{n}")
            )
            mins = (min(CPU_WALL[f"cold{n}"]), min(CPU_WALL[f"warm{n}"]), min(CPU_WALL[f"json{n}"]))
            MINS[n] = mins
            rows.append((n, cold, warm, js))
            print(
                f"{n:>8} {ypath.stat().st_size / 1e6:>8.1f} {cold:>10.3f} {warm:>10.3f} {js:>8.3f}   "
                f"{cpu(f'cold{n}'):>10.3f} {cpu(f'warm{n}'):>6.3f} {cpu(f'json{n}'):>6.3f}"
            )

        if len(rows) >= 2:
            print("\nlinearity: seconds per 1,000 extra entries, between consecutive sizes")
            for label, col in (("yaml cold", 1), ("yaml warm", 2), ("json", 3)):
                slopes = [(b[col] - a[col]) / ((b[0] - a[0]) / 1000) for a, b in zip(rows, rows[1:], strict=False)]
                print(
                    f"  {label:>9}: "
                    + ", ".join(f"{s:.3f}" for s in slopes)
                    + ("   (similar slopes = linear)" if len(slopes) > 1 else "")
                )
        print(
            "\nfastest run (wall) per configuration, the best estimate on a busy machine: "
            + "; ".join(f"{n}: cold {c:.3f}, warm {w:.3f}, json {j:.3f}" for n, (c, w, j) in MINS.items())
        )
        big = [r for r in rows if r[0] == 10_000]
        if big:
            _, cold, warm, js = big[0]
            for label, v in (("yaml, cache warm", warm), ("json", js), ("yaml, cold (no cache)", cold)):
                print(
                    f"10k-entry select, {label}: {v:.3f} s  target <= {SELECT_TARGET_S} s: {'OK' if v <= SELECT_TARGET_S else 'MISSED'}"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
