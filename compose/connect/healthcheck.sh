#!/usr/bin/env bash
# Healthy once the worker's REST API lists both Debezium connector classes.
# Plain bash (/dev/tcp) because the apache/kafka image ships no curl.
set -euo pipefail
exec 3<>/dev/tcp/127.0.0.1/8083
printf 'GET /connector-plugins HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
plugins=$(cat <&3)
grep -q 'io.debezium.connector.postgresql.PostgresConnector' <<<"$plugins"
grep -q 'io.debezium.connector.mariadb.MariaDbConnector' <<<"$plugins"
