# One image for every choreo service; the compose file picks the module to run.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The runtime lock alone (the versions the tests ran, every file checked against its hash),
# in a layer of its own so a code change does not reinstall it; `make lock` writes it.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY events events
COPY services services
COPY schemas schemas
COPY infra infra
# Its dependencies and build tools are all installed above, from the lock.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . && pip check
USER nobody
