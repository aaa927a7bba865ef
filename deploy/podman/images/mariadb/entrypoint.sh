#!/usr/bin/env bash
set -euo pipefail
datadir=/var/lib/mysql
if [[ -n "${MYSQL_PASSWORD_FILE:-}" ]]; then MYSQL_PASSWORD="$(<"$MYSQL_PASSWORD_FILE")"; fi
if [[ ! -d "$datadir/mysql" ]]; then
  mariadb-install-db --datadir="$datadir" --auth-root-authentication-method=socket --auth-root-socket-user=mysql --skip-test-db >/tmp/install-db.log 2>&1 \
    || { cat /tmp/install-db.log >&2; exit 1; }
  mariadbd --datadir="$datadir" --skip-networking --socket=/run/mysqld/init.sock &
  pid=$!
  for _ in $(seq 60); do mariadb --socket=/run/mysqld/init.sock -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
  db="${MYSQL_DATABASE:-}"; user="${MYSQL_USER:-}"
  {
    [[ -n "$db" ]] && echo "CREATE DATABASE IF NOT EXISTS \`$db\`;"
    if [[ -n "$user" ]]; then
      pw="${MYSQL_PASSWORD//\\/\\\\}"; pw="${pw//\'/\\\'}"
      echo "CREATE USER IF NOT EXISTS '$user'@'%' IDENTIFIED BY '$pw';"
      [[ -n "$db" ]] && echo "GRANT ALL ON \`$db\`.* TO '$user'@'%';"
    fi
  } | mariadb --socket=/run/mysqld/init.sock
  kill "$pid"; wait "$pid" || true
fi
exec mariadbd --datadir="$datadir" --bind-address=0.0.0.0 --port=3306 --socket=/run/mysqld/mysqld.sock \
  --innodb-buffer-pool-size="${MARIADB_BUFFER_POOL:-256M}" --max-connections=300 --local-infile=1 "$@"
