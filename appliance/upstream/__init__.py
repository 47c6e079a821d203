"""Upstream engines: servers speaking the OpenAI API (vLLM, llama-server, another
appliance) behind the same pipeline as the embedded engine.

``http`` holds the one aiohttp client session (opened and closed by the app's life cycle);
``wire`` builds request bodies and reads streamed chunks (pure); ``sse`` splits a
``text/event-stream`` into events; ``client`` is the engine (``submit`` streams one
generation, ``probe`` checks health and discovers models); ``probes`` runs the probes in
the background. This room imports aiohttp's client, never its server.
"""
