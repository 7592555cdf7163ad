"""The work of each subcommand as plain functions that notebooks can call without the CLI."""
