"""Not implemented yet (see the issue tracker)."""
import typer

def export_command() -> None:
    """Export to ONNX (not implemented yet)."""
    raise typer.Exit(2)

def bench_command() -> None:
    """Benchmark an artifact (not implemented yet)."""
    raise typer.Exit(2)
