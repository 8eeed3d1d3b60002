# One image for every Atelier service; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ATELIER_HOME=/data

# TENSORFLOW=tensorflow[and-cuda] brings CUDA and cuDNN from PyPI for GPU workers.
ARG TENSORFLOW="tensorflow[and-cuda]"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY db ./db
COPY scheduler ./scheduler
COPY worker ./worker
RUN pip install "${TENSORFLOW}" . \
    && useradd --create-home --uid 1000 atelier \
    && mkdir -p /data && chown atelier:atelier /data

USER atelier
VOLUME ["/data"]
ENTRYPOINT ["atelier"]
CMD ["--help"]
