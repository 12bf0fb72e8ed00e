"""`python -m darwin_core <command>`: one module per sub-command; the only place that reads argv and HF_TOKEN."""

from darwin_core.cli.main import main

__all__ = ["main"]
