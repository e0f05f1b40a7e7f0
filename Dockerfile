# One image for the five lethe services, the kafka-setup job and Milvus Lite's server; docker-compose.yml picks
# each with its command. The base is pinned: Python 3.11 is the lowest version pyproject.toml supports.
FROM python:3.11.14-slim-trixie AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY ops ./ops
COPY deploy/datamap.yaml deploy/retention-rules.yaml deploy/jurisdictions.yaml ./deploy/
# Every directory a volume is mounted on exists here, owned by the runtime user, so that a new named volume
# starts with that owner (docker copies it) and uid 10001 can write it: tests/unit/test_compose.py checks the list.
RUN pip install . && useradd --system --uid 10001 lethe \
    && mkdir -p /app/var/keyvault /app/var/audit /app/var/milvus && chown -R lethe /app/var
USER lethe
ENV LETHE_LOG_FORMAT=json
CMD ["python", "-m", "services.intake"]
