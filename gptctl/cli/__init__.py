"""The command-line layer: parse flags, call one library function, render the result."""
