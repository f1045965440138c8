# The cdc-sync image: one image for `cdc-sync run` (sync and dispatch, or one --role),
# `cdc-sync api` and `cdc-sync sink`. From the repository root:
#   docker build -t cdc-sync .
# The config file is mounted at /etc/cdc-sync/cdc-sync.yaml; DSNs and signing secrets come
# from the environment (CDC_SYNC_STORE__DSN, CDC_SYNC_ESP_SECRET, ...), never from the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CDC_SYNC_CONFIG=/etc/cdc-sync/cdc-sync.yaml

WORKDIR /opt/cdc-sync
COPY pyproject.toml constraints.txt README.md ./
COPY cdc_sync ./cdc_sync
RUN pip install -c constraints.txt . \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cdc-sync \
 && mkdir -p /etc/cdc-sync
COPY config/cdc-sync.yaml /etc/cdc-sync/cdc-sync.yaml

USER 10001:10001
# 8080: the API (`cdc-sync api`); 9108: the daemon's /healthz, /readyz, /metrics
EXPOSE 8080 9108
# SIGTERM: the daemon finishes the batch in hand and commits it (give it 60 s)
STOPSIGNAL SIGTERM
ENTRYPOINT ["cdc-sync"]
CMD ["run"]
