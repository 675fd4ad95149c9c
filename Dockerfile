# A pinned base: rebuilding the same commit gives the same Python and Debian release.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# Dependencies first, from the hashed lock, in their own layer: a code change reuses it.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-deps . && useradd --system --uid 10001 --home-dir /data space-cloud \
    && mkdir -p /data && chown space-cloud /data
USER space-cloud
WORKDIR /data
EXPOSE 4122
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os, sys, urllib.request; port = os.environ.get('PORT', '4122'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status != 200)"
CMD ["space-cloud", "run"]
