"""One module per ``edge`` subcommand; see ``edge.cli``."""
