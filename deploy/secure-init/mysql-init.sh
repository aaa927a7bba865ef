# shellcheck shell=bash
# Sourced (not executed: keep this file non-executable) by the mysql image's entrypoint on the
# first start, with the temporary server on its socket, from /docker-entrypoint-initdb.d/. Makes
# sink-mysql's own user etl_sink: TLS only (REQUIRE SSL, besides the server's
# require_secure_transport), exactly the grants `etl-pipe acls` prints for the demo pipeline
# (rows table etl.league_entry, offsets table etl.etl_offsets). Its password is the compose
# secret `mysql_password`, the one sink-mysql reads. The image's own MYSQL_USER (etl, all rights
# on the database) is the owner for operators, with its own secret.
if ! declare -F docker_process_sql >/dev/null; then
  echo "mysql-init.sh must be sourced by the mysql image's entrypoint (make the file non-executable)" >&2
  exit 1
fi
etl_sink_password="$(<"${ETL_SINK_PASSWORD_FILE:-/run/secrets/mysql_password}")"
docker_process_sql --database=mysql <<-EOSQL
	CREATE USER IF NOT EXISTS 'etl_sink'@'%' IDENTIFIED BY '${etl_sink_password}' REQUIRE SSL;
	GRANT SELECT, INSERT, UPDATE, CREATE, ALTER ON \`${MYSQL_DATABASE}\`.\`league_entry\` TO 'etl_sink'@'%';
	GRANT SELECT, INSERT, UPDATE, CREATE ON \`${MYSQL_DATABASE}\`.\`etl_offsets\` TO 'etl_sink'@'%';
EOSQL
unset etl_sink_password
