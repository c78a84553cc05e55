"""`gptctl serve`: an exported model as an OpenAI-compatible HTTP service.

engine (continuous batching over gptctl.runtime, no HTTP) -> versions (loading, swaps, leases) -> app
(FastAPI routes, OpenAI protocol, SSE) -> server (uvicorn, draining). Importing this package imports
none of fastapi, uvicorn, prometheus-client or onnxruntime: the modules import them where used.
"""
