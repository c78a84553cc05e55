"""Not implemented yet (see the issue tracker)."""
import typer

def select_command() -> None:
    raise typer.Exit(2)
