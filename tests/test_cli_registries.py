"""The CLI's choices come from the registries and the option declarations, never from a second list."""

from __future__ import annotations

import typer
from typer.main import get_command
from typer.testing import CliRunner

from gptctl.bench.registry import BACKENDS, get_backend
from gptctl.cli import flags
from gptctl.errors import BadInput
from gptctl.optimize import registry as optimize_registry
from gptctl.runtime.providers import EXECUTION_PROVIDERS, PROVIDER_NAMES, device_of


def _command(module: str, name: str):
    import importlib

    fn = getattr(importlib.import_module(module), name)
    one = typer.Typer()
    one.command(name)(fn)
    return get_command(one)


def _param(command, flag: str):
    return next(p for p in command.params if flag in p.opts)


def _metavar_choices(param) -> list[str]:
    return param.metavar.strip("[]").split("|")


def test_provider_flags_list_the_execution_providers_table():
    for module, name in (("gptctl.cli.export", "export_command"), ("gptctl.cli.export", "bench_command")):
        command = _command(module, name)
        for flag in ("--provider", "--require-provider"):
            assert _metavar_choices(_param(command, flag)) == list(EXECUTION_PROVIDERS), (name, flag)


def test_providers_table_feeds_names_backends_and_devices():
    assert PROVIDER_NAMES == {n: p.ort_name for n, p in EXECUTION_PROVIDERS.items()}
    assert set(BACKENDS) == set(EXECUTION_PROVIDERS) | {"pytorch"}
    assert all(BACKENDS[n][2] == {"provider": n} for n in EXECUTION_PROVIDERS)
    assert {n: device_of(n) for n in EXECUTION_PROVIDERS} == {n: p.device for n, p in EXECUTION_PROVIDERS.items()}
    assert device_of("cpu") == "cpu" and device_of("tensorrt") == "cuda"


def test_a_provider_outside_the_table_is_refused_with_the_known_ones():
    from gptctl.export.options import ExportOptions
    from gptctl.options import option_problems

    _, problems = option_problems(ExportOptions, {"model": "m", "output": "o", "provider": "cpu,rocm"})
    assert [p for p, _ in problems] == [("provider",)]
    assert "'rocm'" in problems[0][1] and all(repr(n) in problems[0][1] for n in EXECUTION_PROVIDERS)


def test_unknown_backend_is_bad_input_with_a_hint():
    try:
        get_backend("rocm")
    except BadInput as exc:
        assert "rocm" in exc.message and "cpu" in exc.hint and "pytorch" in exc.hint
    else:
        raise AssertionError("get_backend accepted an unknown backend")


def test_optimize_subcommands_are_the_registry():
    from gptctl.cli.optimize import app

    group = get_command(app)
    assert list(group.list_commands(None)) == list(optimize_registry.REGISTRY)
    for name, entry in optimize_registry.REGISTRY.items():
        assert group.get_command(None, name).help == entry.help


def test_a_method_registered_in_the_table_appears_in_the_cli(monkeypatch):
    from gptctl.cli.optimize import build_app

    fake = optimize_registry.Method(
        "gptctl.optimize.prune",
        "gptctl.optimize.options:PruneOptions",
        "Throwaway method registered by a test.",
        "sparsity",
    )
    monkeypatch.setitem(optimize_registry.REGISTRY, "throwaway", fake)
    app = build_app()
    assert "throwaway" in get_command(app).list_commands(None)
    res = CliRunner().invoke(app, ["throwaway", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Throwaway method registered by a test." in res.stdout and "--ratio" in res.stdout


def test_optimize_choices_and_defaults_come_from_the_declarations():
    from gptctl.cli.optimize import app
    from gptctl.optimize.options import PruneOptions

    command = get_command(app).get_command(None, "prune")
    spec = PruneOptions.model_fields["method"]
    assert _metavar_choices(_param(command, "--method")) == list(spec.choices)
    calib = PruneOptions.model_fields["calib_samples"]
    assert f"[default: {calib.default}]" in _param(command, "--calib-samples").help


def test_declared_defaults_are_shown_and_not_passed():
    from gptctl.runtime.settings import BenchSettings

    spec = BenchSettings.model_fields["prompt_lengths"]
    option = flags.flag("prompt_lengths", spec)
    assert option.default is None  # left out -> the declaration's default applies
    assert option.help.endswith("[default: " + ",".join(map(str, spec.default)) + "]")


def test_quantize_choices_come_from_the_quantization_registry():
    from gptctl.export.quant.registry import QUANT_CHOICES

    command = _command("gptctl.cli.export", "export_command")
    assert _metavar_choices(_param(command, "--quantize")) == list(QUANT_CHOICES)
