"""corral's command line, as Ollama's: `corral = "corral.cli:main"`."""

from corral.cli.main import main

__all__ = ["main"]
