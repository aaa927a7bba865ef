# shellcheck shell=bash
# The secure profile of the local stack (ETL_STACK_PROFILE=secure), sourced by stack.sh: its own
# Kafka, MariaDB and FerretDB, on their own ports and data dirs, that refuse anything but TLS and
# authenticated clients. Nothing here touches the single or cluster profiles' services.
#
#   Kafka     one KRaft node (broker+controller) at 127.0.0.1:9192, SASL_SSL + SCRAM-SHA-512 only
#             (ETL_SECURE_KAFKA_PORT); controller 127.0.0.1:9193 over mutual TLS
#             (ETL_SECURE_KAFKA_CONTROLLER_PORT); StandardAuthorizer on, no ACL = denied; super
#             users `admin` (SCRAM, for administration only) and the broker's own certificate.
#             SCRAM users, made at storage format time: admin and one per stage: etl-extract,
#             etl-clean, etl-score, etl-sink-mysql, etl-sink-mongo (no ACLs: `etl-pipe acls
#             --execute` grants them).
#   MariaDB   127.0.0.1:3307 (ETL_SECURE_MYSQL_PORT), require_secure_transport=ON; users
#             etl_admin (ALL, WITH GRANT OPTION) and etl_sink, both REQUIRE SSL (etl_sink gets
#             no grant here: `etl-pipe acls` prints the sink's).
#   FerretDB  TLS only, 127.0.0.1:27018 (ETL_SECURE_MONGO_PORT). FerretDB 1.x on SQLite does not
#             authenticate: TLS is what this profile checks for MongoDB.
#   Registry  https://127.0.0.1:8444/apis/ccompat/v7 (ETL_SECURE_REGISTRY_PORT): nginx (Debian's
#             nginx-light) terminating TLS with the server certificate and asking for HTTP basic
#             auth (user `etl-registry`, password in secrets/etl-registry.password, an apr1 hash in
#             registry.htpasswd) in front of the stack's Apicurio at 127.0.0.1:8081, which this
#             profile starts if it is not running. A TLS proxy with basic auth is how a registry
#             without built-in authentication is usually exposed; Apicurio's own auth needs an
#             OIDC server.
#
# Everything is under $DATA/secure: tls/ (a throw-away CA, made once with openssl: ca.pem, and
# the servers' certificate server.pem/server.key with SAN IP:127.0.0.1 and DNS:localhost, also as
# server.p12 for Kafka), secrets/ (one random password per user, <user>.password, mode 600: the
# pipeline reads them as `{ file = … }`), kafka/, mariadb/, ferretdb/. `down` stops the processes
# and keeps the data; delete $DATA/secure to start over (new CA, new passwords).
# One Kafka node rather than three: the cluster profile already covers replication; a second
# 3-JVM cluster does not fit next to it on 2 cores, and TLS, SCRAM and ACLs behave the same.

SECURE_DIR="$DATA/secure"
SECURE_TLS="$SECURE_DIR/tls"
SECURE_SECRETS="$SECURE_DIR/secrets"
SECURE_KAFKA_PORT="${ETL_SECURE_KAFKA_PORT:-9192}"
SECURE_KAFKA_CONTROLLER_PORT="${ETL_SECURE_KAFKA_CONTROLLER_PORT:-9193}"
SECURE_MYSQL_PORT="${ETL_SECURE_MYSQL_PORT:-3307}"
SECURE_MONGO_PORT="${ETL_SECURE_MONGO_PORT:-27018}"
SECURE_REGISTRY_PORT="${ETL_SECURE_REGISTRY_PORT:-8444}"
SECURE_REGISTRY_USER=etl-registry
SECURE_KAFKA_USERS=(admin etl-extract etl-clean etl-score etl-sink-mysql etl-sink-mongo)
SECURE_MYSQL_USERS=(etl_admin etl_sink)
# The DN of the broker certificate: the principal of the controller connection (mutual TLS).
SECURE_BROKER_DN="CN=etl-secure-broker"

secure_password() { cat "$SECURE_SECRETS/$1.password"; }

secure_make_secrets() { # once: CA, server certificate, keystore, one password per user
  need openssl "OpenSSL (Debian: openssl)"
  mkdir -p "$SECURE_TLS" "$SECURE_SECRETS"
  chmod 700 "$SECURE_SECRETS" "$SECURE_TLS"
  local u
  for u in "${SECURE_KAFKA_USERS[@]}" "${SECURE_MYSQL_USERS[@]}" "$SECURE_REGISTRY_USER" keystore; do
    if [[ ! -s "$SECURE_SECRETS/$u.password" ]]; then
      (umask 077 && openssl rand -hex 16 >"$SECURE_SECRETS/$u.password")
    fi
  done
  [[ -s "$SECURE_TLS/server.p12" ]] && return 0
  say "making a throw-away CA and server certificate in $SECURE_TLS"
  (
    cd "$SECURE_TLS"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 -keyout ca.key -out ca.pem \
      -subj "/CN=etl-pipe local secure profile CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout server.key -out server.csr -subj "/$SECURE_BROKER_DN"
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth,clientAuth" >server.ext
    openssl x509 -req -sha256 -days 365 -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -extfile server.ext -out server.pem
    openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name broker \
      -out server.p12.tmp -passout "file:$SECURE_SECRETS/keystore.password"
    mv server.p12.tmp server.p12
    chmod 644 ca.pem server.pem
  ) >"$RUN/secure-certs.log" 2>&1 || { cat "$RUN/secure-certs.log" >&2; die "making the secure profile's certificates failed"; }
}

# ---------------------------------------------------------------- Kafka, SASL_SSL + SCRAM + ACLs
secure_kafka_java() { java -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$RUN/secure-kafka-log4j2.properties" "$@"; }

secure_write_kafka_config() {
  local dir="$SECURE_DIR/kafka"
  mkdir -p "$dir"
  cat >"$RUN/secure-kafka-log4j2.properties" <<L4J
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = INFO
L4J
  (umask 077 && cat >"$RUN/secure-kafka.properties" <<PROPS
process.roles=broker,controller
node.id=1
listeners=SASL_SSL://127.0.0.1:$SECURE_KAFKA_PORT,CONTROLLER://127.0.0.1:$SECURE_KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_SSL://127.0.0.1:$SECURE_KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
inter.broker.listener.name=SASL_SSL
controller.quorum.voters=1@127.0.0.1:$SECURE_KAFKA_CONTROLLER_PORT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(secure_password admin)";
ssl.keystore.type=PKCS12
ssl.keystore.location=$SECURE_TLS/server.p12
ssl.keystore.password=$(secure_password keystore)
ssl.key.password=$(secure_password keystore)
ssl.truststore.type=PEM
ssl.truststore.location=$SECURE_TLS/ca.pem
listener.name.controller.ssl.client.auth=required
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:$SECURE_BROKER_DN
allow.everyone.if.no.acl.found=false
log.dirs=$dir
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
  )
  # The administrator's client settings, for Kafka's own tools (--command-config).
  (umask 077 && cat >"$RUN/secure-admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(secure_password admin)";
ssl.truststore.type=PEM
ssl.truststore.location=$SECURE_TLS/ca.pem
PROPS
  )
}

secure_start_kafka() {
  if pid_of secure-kafka secure-kafka.properties >/dev/null; then say "secure kafka already running (pid $(pid_of secure-kafka secure-kafka.properties))"; return 0; fi
  port_free "$SECURE_KAFKA_PORT" || die "port $SECURE_KAFKA_PORT is taken by a process this script did not start (set ETL_SECURE_KAFKA_PORT)"
  port_free "$SECURE_KAFKA_CONTROLLER_PORT" || die "port $SECURE_KAFKA_CONTROLLER_PORT is taken by a process this script did not start (set ETL_SECURE_KAFKA_CONTROLLER_PORT)"
  secure_write_kafka_config
  if [[ ! -f "$SECURE_DIR/kafka/meta.properties" ]]; then
    local uuid u scram=()
    uuid="$(secure_kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    # SCRAM credentials go into the metadata log at format time, so the broker can authenticate
    # its own inter-broker connection (and the administrator) from the first start.
    for u in "${SECURE_KAFKA_USERS[@]}"; do
      scram+=(--add-scram "SCRAM-SHA-512=[name=$u,password=$(secure_password "$u")]")
    done
    secure_kafka_java kafka.tools.StorageTool format -t "$uuid" -c "$RUN/secure-kafka.properties" "${scram[@]}" \
      >"$RUN/secure-kafka-format.log" 2>&1 || { cat "$RUN/secure-kafka-format.log" >&2; die "formatting the secure Kafka's storage failed"; }
  fi
  say "starting secure kafka (SASL_SSL, SCRAM-SHA-512, ACLs) on 127.0.0.1:$SECURE_KAFKA_PORT"
  KAFKA_HEAP_OPTS="" nohup java -Xms128m -Xmx512m -XX:+UseG1GC -cp "$KAFKA_LOG_BINDING/*:$KAFKA_LIB/*" \
    -Dlog4j2.configurationFile="$RUN/secure-kafka-log4j2.properties" kafka.Kafka "$RUN/secure-kafka.properties" \
    >>"$RUN/secure-kafka.log" 2>&1 &
  echo $! >"$RUN/secure-kafka.pid"
}

secure_kafka_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$SECURE_KAFKA_PORT") 2>/dev/null; }
secure_kafka_ready() { # the administrator lists topics over SASL_SSL
  timeout 60 java -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$RUN/secure-kafka-log4j2.properties" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$SECURE_KAFKA_PORT" \
    --command-config "$RUN/secure-admin.properties" --list >/dev/null 2>&1
}

# ---------------------------------------------------------------- MariaDB, TLS required
secure_mysql_socket_ready() { mariadb --socket="$RUN/secure-mysqld.sock" -uroot -N -e 'SELECT 1'; }

secure_start_mariadb() {
  if pid_of secure-mariadb secure-mysqld.sock >/dev/null; then say "secure mariadb already running (pid $(pid_of secure-mariadb secure-mysqld.sock))"; return 0; fi
  port_free "$SECURE_MYSQL_PORT" || die "port $SECURE_MYSQL_PORT is taken by a process this script did not start (set ETL_SECURE_MYSQL_PORT)"
  local dir="$SECURE_DIR/mariadb"
  if [[ ! -d "$dir/mysql" ]]; then
    say "initialising the secure MariaDB data directory $dir"
    mkdir -p "$dir"
    mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$dir" --auth-root-authentication-method=socket \
      >"$RUN/secure-mariadb-init.log" 2>&1 || { cat "$RUN/secure-mariadb-init.log" >&2; die "mariadb-install-db failed"; }
  fi
  say "starting secure mariadb (TLS required) on 127.0.0.1:$SECURE_MYSQL_PORT"
  nohup "$MYSQLD" --no-defaults --user="$(id -un)" --datadir="$dir" --bind-address=127.0.0.1 --port="$SECURE_MYSQL_PORT" \
    --socket="$RUN/secure-mysqld.sock" --pid-file="$RUN/secure-mariadbd.pid" --character-set-server=utf8mb4 \
    --collation-server=utf8mb4_unicode_ci --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=1 --max-connections=200 --skip-name-resolve \
    --ssl-ca="$SECURE_TLS/ca.pem" --ssl-cert="$SECURE_TLS/server.pem" --ssl-key="$SECURE_TLS/server.key" \
    --require-secure-transport=ON --log-error="$RUN/secure-mariadb.log" >>"$RUN/secure-mariadb.log" 2>&1 &
  echo $! >"$RUN/secure-mariadb.pid"
  wait_for secure-mariadb 60 secure_mysql_socket_ready secure-mysqld.sock
  # Password users for 127.0.0.1 (sqlx cannot use unix_socket auth) that must use TLS.
  mariadb --socket="$RUN/secure-mysqld.sock" -uroot <<SQL
CREATE USER IF NOT EXISTS 'etl_admin'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('$(secure_password etl_admin)') REQUIRE SSL;
GRANT ALL PRIVILEGES ON *.* TO 'etl_admin'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'etl_sink'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('$(secure_password etl_sink)') REQUIRE SSL;
FLUSH PRIVILEGES;
SQL
}

secure_mysql_ready() { # over TCP with TLS, checking the certificate against the CA
  # The password through the environment, not the command line (`ps` shows arguments).
  MYSQL_PWD="$(secure_password etl_admin)" mariadb --protocol=TCP -h127.0.0.1 -P"$SECURE_MYSQL_PORT" -uetl_admin \
    --ssl --ssl-ca="$SECURE_TLS/ca.pem" --ssl-verify-server-cert -N -e 'SELECT 1'
}

# ---------------------------------------------------------------- FerretDB, TLS only
secure_ferretdb_match() { echo "listen-tls=127.0.0.1:$SECURE_MONGO_PORT"; }
secure_mongo_ready() { python3 "$(dirname "${BASH_SOURCE[0]}")/mongo_ping.py" 127.0.0.1 "$SECURE_MONGO_PORT" "$SECURE_TLS/ca.pem"; }

secure_start_ferretdb() {
  if pid_of secure-ferretdb "$(secure_ferretdb_match)" >/dev/null; then say "secure ferretdb already running"; return 0; fi
  port_free "$SECURE_MONGO_PORT" || die "port $SECURE_MONGO_PORT is taken by a process this script did not start (set ETL_SECURE_MONGO_PORT)"
  mkdir -p "$SECURE_DIR/ferretdb"
  say "starting secure ferretdb (TLS only) on 127.0.0.1:$SECURE_MONGO_PORT"
  # --listen-addr= (empty): no plain TCP listener at all.
  GOGC="$FERRETDB_GOGC" nohup "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$SECURE_DIR/ferretdb/" --listen-addr= \
    --listen-tls="127.0.0.1:$SECURE_MONGO_PORT" --listen-tls-cert-file="$SECURE_TLS/server.pem" \
    --listen-tls-key-file="$SECURE_TLS/server.key" --state-dir="$SECURE_DIR/ferretdb" --debug-addr=- \
    --telemetry=disable --log-level=warn >"$RUN/secure-ferretdb.log" 2>&1 &
  echo $! >"$RUN/secure-ferretdb.pid"
}

# ---------------------------------------------------------------- schema registry, HTTPS + basic auth
install_nginx() {
  command -v nginx >/dev/null && return 0
  need apt-get "nginx (Debian: nginx-light)"
  say "installing nginx-light from Debian (apt-get)"
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light) \
    >"$RUN/apt-nginx.log" 2>&1 || { tail -n 30 "$RUN/apt-nginx.log" >&2; die "apt-get install nginx-light failed"; }
}

secure_registry_match() { echo "$SECURE_DIR/nginx/nginx.conf"; }
secure_registry_ready() { # the registry's subjects through the proxy, with the CA and the password
  curl -fsS -o /dev/null --cacert "$SECURE_TLS/ca.pem" -K - \
    "https://127.0.0.1:$SECURE_REGISTRY_PORT/apis/ccompat/v7/subjects" \
    <<<"user = \"$SECURE_REGISTRY_USER:$(secure_password "$SECURE_REGISTRY_USER")\""
}

secure_start_registry_proxy() {
  if pid_of secure-registry "$(secure_registry_match)" >/dev/null; then say "secure registry proxy already running"; return 0; fi
  port_free "$SECURE_REGISTRY_PORT" || die "port $SECURE_REGISTRY_PORT is taken by a process this script did not start (set ETL_SECURE_REGISTRY_PORT)"
  local dir="$SECURE_DIR/nginx"
  mkdir -p "$dir/tmp"
  (umask 077 && printf '%s:%s\n' "$SECURE_REGISTRY_USER" \
    "$(openssl passwd -apr1 -stdin <<<"$(secure_password "$SECURE_REGISTRY_USER")")" >"$dir/registry.htpasswd")
  cat >"$dir/nginx.conf" <<CONF
# Written by deploy/local/secure.sh: HTTPS + basic auth in front of the local Apicurio.
daemon off;
user $(id -un);
worker_processes 1;
pid $RUN/secure-registry-nginx.pid;
error_log $RUN/secure-registry.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  server {
    listen 127.0.0.1:$SECURE_REGISTRY_PORT ssl;
    ssl_certificate $SECURE_TLS/server.pem;
    ssl_certificate_key $SECURE_TLS/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    auth_basic "etl-pipe schema registry";
    auth_basic_user_file $dir/registry.htpasswd;
    location / {
      proxy_pass http://127.0.0.1:$REGISTRY_PORT;
      proxy_set_header Host \$host;
    }
  }
}
CONF
  say "starting the secure registry proxy (nginx, HTTPS + basic auth) on 127.0.0.1:$SECURE_REGISTRY_PORT → 127.0.0.1:$REGISTRY_PORT"
  nohup nginx -e "$RUN/secure-registry.log" -c "$dir/nginx.conf" >>"$RUN/secure-registry.log" 2>&1 &
  echo $! >"$RUN/secure-registry.pid"
}

# ---------------------------------------------------------------- commands
secure_up() {
  need python3 "Python 3 (Debian: python3)"
  mkdir -p "$CACHE" "$DATA" "$RUN"
  install_mariadb
  install_kafka
  install_kafka_log_binding
  install_ferretdb
  need curl "curl (Debian: curl)"
  install_nginx
  install_java21
  install_registry
  secure_make_secrets
  local t0=$SECONDS
  secure_start_kafka
  secure_start_ferretdb
  secure_start_mariadb
  start_registry
  secure_start_registry_proxy
  wait_for secure-ferretdb 60 secure_mongo_ready "$(secure_ferretdb_match)"
  wait_for secure-kafka 90 secure_kafka_port_open secure-kafka.properties
  wait_for secure-kafka 90 secure_kafka_ready secure-kafka.properties
  wait_for secure-mariadb 60 secure_mysql_ready secure-mysqld.sock
  wait_for registry 120 registry_ready "$(registry_match)"
  wait_for secure-registry 30 secure_registry_ready "$(secure_registry_match)"
  say "secure profile ready after $((SECONDS - t0))s"
  secure_status
}

secure_down() {
  stop_one secure-kafka secure-kafka.properties
  stop_one secure-ferretdb "$(secure_ferretdb_match)"
  stop_one secure-mariadb secure-mysqld.sock
  stop_one secure-registry "$(secure_registry_match)"
}

secure_status() {
  local rc=0 p
  if p="$(pid_of secure-kafka secure-kafka.properties)"; then
    say "secure kafka     up   pid $p   SASL_SSL 127.0.0.1:$SECURE_KAFKA_PORT (SCRAM-SHA-512; users ${SECURE_KAFKA_USERS[*]})"
  else say "secure kafka     down"; rc=1; fi
  if p="$(pid_of secure-mariadb secure-mysqld.sock)"; then
    say "secure mariadb   up   pid $p   127.0.0.1:$SECURE_MYSQL_PORT (TLS required; users ${SECURE_MYSQL_USERS[*]})"
  else say "secure mariadb   down"; rc=1; fi
  if p="$(pid_of secure-ferretdb "$(secure_ferretdb_match)")"; then
    say "secure ferretdb  up   pid $p   mongodb://127.0.0.1:$SECURE_MONGO_PORT/?tls=true (TLS only)"
  else say "secure ferretdb  down"; rc=1; fi
  if p="$(pid_of secure-registry "$(secure_registry_match)")"; then
    say "secure registry  up   pid $p   https://127.0.0.1:$SECURE_REGISTRY_PORT/apis/ccompat/v7 (basic auth $SECURE_REGISTRY_USER; → Apicurio 127.0.0.1:$REGISTRY_PORT)"
  else say "secure registry  down"; rc=1; fi
  say "CA $SECURE_TLS/ca.pem   passwords $SECURE_SECRETS/<user>.password   admin client config $RUN/secure-admin.properties"
  return $rc
}
