"""benchmarks/bench_serve.py: its arguments, the exit without an artifact, and the pure parts of its scenarios
(reading /metrics, the corrupt copy, the swap verdict). No server runs here."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_serve.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_serve", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def test_scenarios_default_to_all_and_parse_a_list(bench):
    assert bench.parse_args([]).scenarios == list(bench.SCENARIOS)
    assert bench.parse_args(["--scenarios", "all"]).scenarios == list(bench.SCENARIOS)
    args = bench.parse_args(["--scenarios", "ttft, 429", "--swap-requests", "20"])
    assert args.scenarios == ["ttft", "429"] and args.swap_requests == 20 and args.max_tokens == 64


@pytest.mark.parametrize("argv", [["--scenarios", "ttft,nope"], ["--scenarios", ","], ["--requests", "0"]])
def test_bad_arguments_exit_2(bench, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2


def test_without_an_artifact_it_exits_2_and_says_how_to_make_one(bench, tmp_path, capsys):
    assert bench.main(["--artifact", str(tmp_path / "none"), "--scenarios", "429"]) == 2
    err = capsys.readouterr().err
    assert "is not a directory" in err and "gptctl export" in err
    assert bench.main(["--artifact", str(tmp_path), "--scenarios", "429"]) == 2
    err = capsys.readouterr().err
    assert "no model.onnx" in err and "recipes/quickstart.yaml" in err


def test_metric_sums_a_series_over_its_labels_and_ignores_longer_names(bench):
    text = (
        "# HELP gptctl_serve_requests_running Requests decoding\n"
        "gptctl_serve_requests_running 3.0\n"
        'gptctl_serve_engine_finished_total{reason="length"} 2.0\n'
        'gptctl_serve_engine_finished_total{reason="cancelled"} 5.0\n'
        "gptctl_serve_engine_finished_created 17.0\n"
    )
    assert bench.metric(text, "gptctl_serve_requests_running") == 3.0
    assert bench.metric(text, "gptctl_serve_engine_finished_total") == 7.0
    assert bench.metric(text, "gptctl_serve_engine_finished") == 0.0


def test_swap_copies_keep_the_good_one_whole_and_cut_the_corrupt_one(bench, tmp_path):
    artifact = tmp_path / "a"
    artifact.mkdir()
    (artifact / "model.onnx").write_bytes(b"x" * 1000)
    (artifact / "gptctl.json").write_text("{}")
    good, corrupt = bench.swap_copies(artifact, tmp_path / "work")
    assert (good / "model.onnx").stat().st_size == 1000 and (good / "gptctl.json").is_file()
    assert (corrupt / "model.onnx").stat().st_size == 500 and (corrupt / "gptctl.json").read_text() == "{}"


def _swaps(good, serving):
    return {"good": (0, 4.0, 10.0), "corrupt": (1, 1.0, 11.0), "serving_after": str(serving), "done_at_corrupt": 50}


def test_the_swap_verdict_needs_every_stream_complete_and_the_good_copy_serving(bench, tmp_path):
    good = tmp_path / "good"
    done = [(True, None, 5.0)] * 50 + [(True, None, 12.0)] * 150
    assert bench.swap_outcome(done, _swaps(good, good), good, 200).passed
    one_cut = done[:-1] + [(False, "the stream ended without [DONE]", 12.0)]
    assert not bench.swap_outcome(one_cut, _swaps(good, good), good, 200).passed
    assert not bench.swap_outcome(done, _swaps(good, tmp_path / "corrupt"), good, 200).passed
    corrupt_accepted = {**_swaps(good, good), "corrupt": (0, 1.0, 11.0)}
    assert not bench.swap_outcome(done, corrupt_accepted, good, 200).passed
    # Swaps that ended after the last request did not happen under load.
    late = {**_swaps(good, good), "done_at_corrupt": 200}
    outcome = bench.swap_outcome(done, late, good, 200)
    assert not outcome.passed and "before the swaps" in outcome.figures
