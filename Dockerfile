# One image for every choreo service; the compose file picks the module to run.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY events events
COPY services services
COPY schemas schemas
COPY infra infra
RUN pip install --no-cache-dir .
USER nobody
