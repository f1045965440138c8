#!/usr/bin/env bash
# The connector configs (connectors/*.json, filled in by `stack/stackctl.py env`)
# name Postgres, MariaDB and Kafka as the local stack runs them: 127.0.0.1 and
# the default ports. Forward those loopback ports to the compose services
# (LOOPBACK_FORWARDS="port=host:port ..."), then run the worker.
set -euo pipefail
for forward in ${LOOPBACK_FORWARDS:-}; do
  socat "TCP-LISTEN:${forward%%=*},bind=127.0.0.1,fork,reuseaddr" "TCP:${forward#*=}" &
done
exec /opt/kafka/bin/connect-distributed.sh /opt/connect/connect-distributed.properties
