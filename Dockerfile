# One image for every Atelier service; docker-compose.yml picks the command.
FROM python:3.11-slim

# NVIDIA_DRIVER_CAPABILITIES: with a GPU reservation the NVIDIA runtime mounts the driver
# and nvidia-smi (which `atelier worker --gpus` uses to find the GPUs) into the container.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ATELIER_HOME=/data \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# TENSORFLOW=tensorflow[and-cuda] brings CUDA and cuDNN from PyPI for GPU workers;
# build with --build-arg TENSORFLOW=tensorflow-cpu for a smaller CPU-only image.
ARG TENSORFLOW="tensorflow[and-cuda]"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY core ./core
COPY db ./db
COPY kinds ./kinds
COPY scheduler ./scheduler
COPY worker ./worker
RUN pip install "${TENSORFLOW}" . \
    && useradd --create-home --uid 1000 atelier \
    && mkdir -p /data && chown atelier:atelier /data

# Not root: a job's code never runs with more rights than it needs. /data (ATELIER_HOME)
# must be writable by uid 1000 when it is a bind mount or a shared filesystem.
USER atelier
VOLUME ["/data"]
EXPOSE 5555
ENTRYPOINT ["atelier"]
CMD ["--help"]
