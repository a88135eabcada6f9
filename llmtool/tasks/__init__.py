"""The inference tasks: one module per command, each with a Python entry that the CLI calls too."""
