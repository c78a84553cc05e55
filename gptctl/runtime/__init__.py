"""The bottom of gptctl's ONNX side: ONNX Runtime sessions per execution provider, the decode loop over an
exported decoder, and reading artifacts. `export` (validation), `bench` and `serve` build on it; it imports
none of them. Light on import: onnxruntime is imported by the functions that create sessions.
"""
