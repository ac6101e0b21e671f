# gen serve, CPU image: an INT8 ONNX export of whisper-base run by ONNX Runtime - no torch in the image.
#   docker build -t gen:cpu .
#   docker run -p 8000:8000 gen:cpu                                  # whisper-base, INT8 (exported at build)
#   docker run -p 8000:8000 -v $PWD/exports:/models gen:cpu gen serve /models/my-int8 --host 0.0.0.0
# Conversions other than speech -> text need a checkpoint and torch: use Dockerfile.cuda, or the export
# stage below (`docker build --target export`), which has torch. See docs/deploy.md for replicas.

# --- stage 1: torch (CPU wheel) exports the default model to INT8 ONNX --------------------------------
FROM python:3.11-slim AS export
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 GEN_HOME=/var/lib/gen
# torch's CPU wheel (the default index would bring several GB of CUDA libraries)
RUN pip install "torch>=2.5,<2.14" --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY generalist_cli ./generalist_cli
COPY examples/hello.m4a ./examples/hello.m4a
RUN pip install . && gen export whisper-base --quantize int8 --calibration examples/hello.m4a --out /models/whisper-base-int8

# --- stage 2: the runtime: ONNX Runtime, numpy, PyAV, tokenizers and the HTTP stack ------------------
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 GEN_HOME=/var/lib/gen
WORKDIR /src
COPY pyproject.toml README.md ./
COPY generalist_cli ./generalist_cli
# --no-deps: the package declares torch for training; serving an export needs only these (silero-vad too
# declares torch; gen reads only its ONNX file, through ONNX Runtime)
RUN pip install --no-deps . \
 && pip install numpy av typer rich tokenizers onnxruntime fastapi uvicorn python-multipart \
 && pip install --no-deps silero-vad \
 && useradd --system --home /var/lib/gen gen && mkdir -p /var/lib/gen && chown gen /var/lib/gen
COPY --from=export /models /models
USER gen
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["gen", "serve", "/models/whisper-base-int8", "--host", "0.0.0.0", "--port", "8000"]
