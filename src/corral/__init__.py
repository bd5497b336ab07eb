"""corral: a local LLM server that speaks Ollama's API."""

__version__ = "0.1.0"
# The Ollama release whose API corral implements: /api/version reports it, since clients gate
# features on that number.
OLLAMA_API_VERSION = "0.33.0"
