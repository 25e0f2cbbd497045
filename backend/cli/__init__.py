"""Command-line dispatcher: ``python -m backend <command> [--help]``."""
