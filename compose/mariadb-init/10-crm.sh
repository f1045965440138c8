#!/usr/bin/env bash
# Run once by the mariadb image on an empty volume: stack/sql/crm.sql loaded
# into crm, as stack/stackctl.py does. The image may source this file, so no
# `exit` and no `set -u`.
set -eo pipefail
MYSQL_PWD="$MARIADB_ROOT_PASSWORD" mariadb --protocol=socket -uroot \
  -e 'CREATE DATABASE IF NOT EXISTS crm CHARACTER SET utf8mb4'
MYSQL_PWD="$MARIADB_ROOT_PASSWORD" mariadb --protocol=socket -uroot crm \
  < /cdc-sync/sql/crm.sql
