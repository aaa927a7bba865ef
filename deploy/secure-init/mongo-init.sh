# shellcheck shell=bash
# Sourced by the mongo image's entrypoint on the first start (empty /data/db), from
# /docker-entrypoint-initdb.d/, while the temporary mongod listens on 127.0.0.1 without
# authentication ("${mongo[@]}" is the entrypoint's mongosh command). Makes sink-mongo's user
# etl_sink_mongo with the role `etl-pipe acls` prints (find, insert, update on
# etl.league_entry). Both live in the admin database: etl-pipe gives the driver no auth source,
# so it authenticates against `admin` (the driver's default), not the `etl` database the printed
# mongosh lines `use`.
etl_sink_mongo_password="$(<"${ETL_SINK_MONGO_PASSWORD_FILE:-/run/secrets/mongo_etl_sink_password}")"
# shellcheck disable=SC2154 # mongo: the entrypoint's mongosh command
"${mongo[@]}" admin <<-EOJS
	db.createRole({ role: "etl_sink_mongo", roles: [], privileges: [
	  { resource: { db: "etl", collection: "league_entry" }, actions: ["find", "insert", "update"] } ] })
	db.createUser({ user: "etl_sink_mongo", pwd: $(_js_escape "$etl_sink_mongo_password"), roles: ["etl_sink_mongo"] })
EOJS
unset etl_sink_mongo_password
