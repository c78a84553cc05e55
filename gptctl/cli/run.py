"""Not implemented yet (see the issue tracker)."""
import typer

def run_command() -> None:
    raise typer.Exit(2)
