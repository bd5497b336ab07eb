"""corral across machines: the pieces of cluster mode (messages, the in-process ASGI call, routing, merging)."""
