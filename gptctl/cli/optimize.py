"""Not implemented yet."""
import typer
app = typer.Typer(help="(not implemented yet)")
