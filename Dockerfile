# gen serve, CPU image.
#   docker build -t gen:cpu .
#   docker run -p 8000:8000 gen:cpu                                  # whisper-base (bundled weights)
#   docker run -p 8000:8000 -v $PWD/exports:/models gen:cpu gen serve /models/base-int8 --host 0.0.0.0
# See docs/deploy.md for replicas behind a load balancer.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 GEN_HOME=/var/lib/gen
# torch's CPU wheel (the default index would bring several GB of CUDA libraries)
RUN pip install "torch>=2.5,<2.14" --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY generalist_cli ./generalist_cli
RUN pip install . && useradd --system --home /var/lib/gen gen && mkdir -p /var/lib/gen && chown gen /var/lib/gen
USER gen
# the default model goes into the store at build time, so a container starts without a download
RUN gen models pull whisper-base
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["gen", "serve", "whisper-base", "--host", "0.0.0.0", "--port", "8000"]
