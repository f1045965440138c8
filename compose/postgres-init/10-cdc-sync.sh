#!/usr/bin/env bash
# Run once by the postgres image on an empty volume, as stack/stackctl.py sets
# up its cluster: stack/sql/shop.sql loaded into shop (POSTGRES_DB), and the
# daemon's own database cdc_sync. POSTGRES_USER is the superuser that owns
# both. The image may source this file, so no `exit` and no `set -u`.
set -eo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -c 'CREATE DATABASE cdc_sync'
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname shop \
  -f /cdc-sync/sql/shop.sql
