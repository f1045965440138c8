#!/usr/bin/env bash
# Run once by the mariadb image on an empty volume. The image has already
# created '$MARIADB_USER'@'%' with $MARIADB_PASSWORD; grant it what the
# Debezium MariaDB connector needs, no more. The image may source this file,
# so no `exit` and no `set -u`.
set -eo pipefail
MYSQL_PWD="$MARIADB_ROOT_PASSWORD" mariadb --protocol=socket -uroot -e "
  GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT
  ON *.* TO '$MARIADB_USER'@'%';
  GRANT ALL PRIVILEGES ON crm.* TO '$MARIADB_USER'@'%'"
