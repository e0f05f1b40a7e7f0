# One image for the five lethe services; docker-compose.yml picks the service with its command.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY deploy/datamap.yaml deploy/retention-rules.yaml ./deploy/
RUN pip install . && useradd --system --uid 10001 lethe && mkdir -p /app/var/keyvault /app/var/audit && chown -R lethe /app/var
USER lethe
ENV LETHE_LOG_FORMAT=json
CMD ["python", "-m", "services.intake"]
