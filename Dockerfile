# The worker image: what one task needs and nothing else.
#
# Each task runs `python /app/worker.py` in its own working directory (Azure
# Batch mounts the task's directory and makes it the working directory; so
# does `--backend docker`). The base image is a build argument so that
# machines without a public registry can build on a local one:
#     docker build --build-arg BASE_IMAGE=superbatch-base:bookworm -t superbatch-worker .
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The task command says `python`: official Python images have it, a Debian
# base has it only with python-is-python3, so make sure it is there.
RUN command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python

# Dependencies first, code last: editing task.py reuses this layer and
# rebuilds in seconds.
COPY requirements-worker.txt /tmp/requirements-worker.txt
RUN python -m pip install -r /tmp/requirements-worker.txt \
    && rm /tmp/requirements-worker.txt

# Not root. The docker backend runs containers as the host user (--user) so
# the mounted working directory stays the host user's.
RUN useradd --create-home --uid 1000 --user-group worker
COPY constants.py worker.py task.py /app/
USER worker
WORKDIR /app
CMD ["python", "/app/worker.py"]
