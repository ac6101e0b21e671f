"""``gen serve``: an HTTP API (FastAPI + uvicorn) over a checkpoint or an export: OpenAI-compatible
transcription/translation endpoints with micro-batching, ``/v1/convert`` for the other conversions,
``/health`` and Prometheus ``/metrics``."""
