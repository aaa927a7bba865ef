#!/usr/bin/env bash
# Local stack for etl-pipe: Apache Kafka (KRaft), MariaDB and FerretDB on loopback.
#
#   deploy/local/stack.sh up      install what is missing (once), start what is not running, wait until ready
#   deploy/local/stack.sh down    stop what `up` started (by pid file only)
#   deploy/local/stack.sh status  show what runs where
#
# Everything lives under $ETL_STACK_HOME (default ~/.local/share/etl-pipe-stack):
#   cache/  downloaded/built software (Kafka jars, FerretDB binary) -- kept between runs
#   data/   Kafka log dirs, MariaDB datadir, FerretDB SQLite files
#   run/    pid files and service logs
set -euo pipefail

STACK_HOME="${ETL_STACK_HOME:-$HOME/.local/share/etl-pipe-stack}"
CACHE="$STACK_HOME/cache"
DATA="${ETL_STACK_DATA:-$STACK_HOME/data}"
RUN="$STACK_HOME/run"

KAFKA_VERSION="${ETL_KAFKA_VERSION:-4.1.1}"
LOG4J_VERSION="2.24.3"
FERRETDB_VERSION="${ETL_FERRETDB_VERSION:-v1.24.2}"

KAFKA_PORT="${ETL_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${ETL_KAFKA_CONTROLLER_PORT:-9093}"
MYSQL_PORT="${ETL_MYSQL_PORT:-3306}"
MONGO_PORT="${ETL_MONGO_PORT:-27017}"
MYSQL_USER="${ETL_MYSQL_USER:-etl}"
MYSQL_PASSWORD="${ETL_MYSQL_PASSWORD:-etl}"
MYSQL_DATABASE="${ETL_MYSQL_DATABASE:-etl}"
KAFKA_HEAP="${ETL_KAFKA_HEAP:-768m}"

KAFKA_LIB="$CACHE/kafka-$KAFKA_VERSION/libs"
FERRETDB_BIN="$CACHE/ferretdb-$FERRETDB_VERSION/ferretdb"

say() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

need() {
  # need CMD "what to install"
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install $2 and run again"
}

# ---------------------------------------------------------------- pid files
pid_of() { # prints the pid if the pid file names a live process whose cmdline matches $2
  local f="$RUN/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2" || return 1
  echo "$pid"
}

tail_log() {
  local log="$RUN/$1.log"
  if [[ -f "$log" ]]; then
    echo "----- last lines of $log -----" >&2
    tail -n 40 "$log" >&2
    echo "-----" >&2
  fi
}

wait_for() { # wait_for NAME SECONDS CHECK-FUNCTION PROC-MATCH
  local name="$1" secs="$2" check="$3" match="$4" i
  for ((i = 0; i < secs * 2; i++)); do
    if "$check" >/dev/null 2>&1; then return 0; fi
    if ! pid_of "$name" "$match" >/dev/null; then
      tail_log "$name"
      die "$name exited during start-up (log: $RUN/$name.log)"
    fi
    sleep 0.5
  done
  tail_log "$name"
  die "$name did not answer within ${secs}s (log: $RUN/$name.log)"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- Kafka
install_kafka() {
  [[ -f "$KAFKA_LIB/.complete" ]] && return 0
  need java "a Java 17+ JDK (Debian: openjdk-17-jdk-headless)"
  need mvn "Apache Maven (Debian: maven)"
  say "installing Apache Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_LIB"
  local tmp; tmp="$(mktemp -d)"
  cat >"$tmp/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.etlpipe</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
POM
  mkdir -p "$KAFKA_LIB"
  if ! (cd "$tmp" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIB" >"$tmp/mvn.log" 2>&1); then
    tail -n 30 "$tmp/mvn.log" >&2
    die "downloading Kafka jars failed (see above)"
  fi
  touch "$KAFKA_LIB/.complete"
  rm -rf "$tmp"
}

kafka_java() { java -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$RUN/kafka-log4j2.properties" "$@"; }

kafka_ready() {
  timeout 60 java -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$RUN/kafka-log4j2.properties" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --list >/dev/null 2>&1
}
kafka_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; }

start_kafka() {
  if pid_of kafka kafka.Kafka >/dev/null; then say "kafka already running (pid $(pid_of kafka kafka.Kafka))"; return 0; fi
  port_free "$KAFKA_PORT" || die "port $KAFKA_PORT is taken by a process this script did not start (set ETL_KAFKA_PORT)"
  local dir="$DATA/kafka" props="$RUN/kafka.properties"
  mkdir -p "$dir"
  cat >"$RUN/kafka-log4j2.properties" <<L4J
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
  cat >"$props" <<PROPS
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
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
  if [[ ! -f "$dir/meta.properties" ]]; then
    local uuid; uuid="$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    kafka_java kafka.tools.StorageTool format -t "$uuid" -c "$props" >"$RUN/kafka-format.log" 2>&1 \
      || { cat "$RUN/kafka-format.log" >&2; die "formatting Kafka storage failed"; }
  fi
  say "starting kafka on 127.0.0.1:$KAFKA_PORT"
  KAFKA_HEAP_OPTS="" nohup java -Xms256m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -cp "$KAFKA_LIB/*" \
    -Dlog4j2.configurationFile="$RUN/kafka-log4j2.properties" kafka.Kafka "$props" >"$RUN/kafka.log" 2>&1 &
  echo $! >"$RUN/kafka.pid"
}

# ---------------------------------------------------------------- MariaDB
MYSQLD=""
install_mariadb() {
  for c in mariadbd mysqld; do
    for p in /usr/sbin/$c /usr/bin/$c; do [[ -x $p ]] && { MYSQLD=$p; return 0; }; done
  done
  need apt-get "MariaDB server 10.11+ (Debian: mariadb-server)"
  say "installing mariadb-server from Debian (apt-get)"
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server mariadb-client) \
    >"$RUN/apt.log" 2>&1 || { tail -n 30 "$RUN/apt.log" >&2; die "apt-get install mariadb-server failed"; }
  MYSQLD=/usr/sbin/mariadbd
}

mysql_ready() {
  mariadb --protocol=TCP -h127.0.0.1 -P"$MYSQL_PORT" -u"$MYSQL_USER" -p"$MYSQL_PASSWORD" -N -e 'SELECT 1' "$MYSQL_DATABASE"
}
mysql_socket_ready() { mariadb --socket="$RUN/mysqld.sock" -uroot -N -e 'SELECT 1'; }

start_mariadb() {
  if pid_of mariadb "$(basename "$MYSQLD")" >/dev/null; then say "mariadb already running (pid $(pid_of mariadb "$(basename "$MYSQLD")"))"; return 0; fi
  port_free "$MYSQL_PORT" || die "port $MYSQL_PORT is taken by a process this script did not start (set ETL_MYSQL_PORT)"
  local dir="$DATA/mariadb"
  if [[ ! -d "$dir/mysql" ]]; then
    say "initialising MariaDB data directory $dir"
    mkdir -p "$dir"
    mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$dir" --auth-root-authentication-method=socket \
      >"$RUN/mariadb-init.log" 2>&1 || { cat "$RUN/mariadb-init.log" >&2; die "mariadb-install-db failed"; }
  fi
  say "starting mariadb on 127.0.0.1:$MYSQL_PORT"
  nohup "$MYSQLD" --no-defaults --user="$(id -un)" --datadir="$dir" --bind-address=127.0.0.1 --port="$MYSQL_PORT" \
    --socket="$RUN/mysqld.sock" --pid-file="$RUN/mariadbd.pid" --character-set-server=utf8mb4 \
    --collation-server=utf8mb4_unicode_ci --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=1 \
    --max-connections=500 --skip-name-resolve --log-error="$RUN/mariadb.log" >>"$RUN/mariadb.log" 2>&1 &
  echo $! >"$RUN/mariadb.pid"
  wait_for mariadb 60 mysql_socket_ready "$(basename "$MYSQLD")"
  # A password user for 127.0.0.1: sqlx cannot use unix_socket or ed25519 auth.
  mariadb --socket="$RUN/mysqld.sock" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('$MYSQL_PASSWORD');
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('$MYSQL_PASSWORD');
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
}

# ---------------------------------------------------------------- FerretDB
install_ferretdb() {
  [[ -x "$FERRETDB_BIN" ]] && return 0
  need go "Go 1.22+ (https://go.dev or Debian: golang)"
  say "building FerretDB $FERRETDB_VERSION from the Go module proxy"
  local json dir src
  json="$(cd /tmp && go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION")" \
    || die "go mod download github.com/FerretDB/FerretDB@$FERRETDB_VERSION failed"
  dir="$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  src="$CACHE/ferretdb-src-$FERRETDB_VERSION"
  rm -rf "$src"; mkdir -p "$src" "$(dirname "$FERRETDB_BIN")"
  cp -r "$dir"/. "$src"/; chmod -R u+w "$src"
  # A module download lacks the generated version file; without it the binary panics at start
  # (upstream issue #2982).
  echo "$FERRETDB_VERSION" >"$src/build/version/version.txt"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$FERRETDB_BIN" ./cmd/ferretdb) >"$RUN/ferretdb-build.log" 2>&1 \
    || { tail -n 30 "$RUN/ferretdb-build.log" >&2; die "building FerretDB failed"; }
  rm -rf "$src"
}

mongo_ready() { python3 "$(dirname "${BASH_SOURCE[0]}")/mongo_ping.py" 127.0.0.1 "$MONGO_PORT"; }

start_ferretdb() {
  if pid_of ferretdb ferretdb >/dev/null; then say "ferretdb already running (pid $(pid_of ferretdb ferretdb))"; return 0; fi
  port_free "$MONGO_PORT" || die "port $MONGO_PORT is taken by a process this script did not start (set ETL_MONGO_PORT)"
  mkdir -p "$DATA/ferretdb"
  say "starting ferretdb on 127.0.0.1:$MONGO_PORT"
  nohup "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$DATA/ferretdb/" --listen-addr="127.0.0.1:$MONGO_PORT" \
    --state-dir="$DATA/ferretdb" --debug-addr=- --telemetry=disable --log-level=warn >"$RUN/ferretdb.log" 2>&1 &
  echo $! >"$RUN/ferretdb.pid"
}

# ---------------------------------------------------------------- commands
up() {
  need python3 "Python 3 (Debian: python3)"
  mkdir -p "$CACHE" "$DATA" "$RUN"
  install_mariadb
  install_kafka
  install_ferretdb
  start_kafka
  start_ferretdb
  start_mariadb
  wait_for ferretdb 60 mongo_ready ferretdb
  wait_for kafka 90 kafka_port_open kafka.Kafka
  wait_for kafka 90 kafka_ready kafka.Kafka
  wait_for mariadb 60 mysql_ready "$(basename "$MYSQLD")"
  status
}

stop_one() {
  local name="$1" match="$2" pid i
  if pid="$(pid_of "$name" "$match")"; then
    say "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then say "$name did not stop in 30s; killing"; kill -9 "$pid" 2>/dev/null || true; fi
  else
    say "$name not running"
  fi
  rm -f "$RUN/$name.pid"
}

down() {
  stop_one ferretdb ferretdb
  stop_one kafka kafka.Kafka
  stop_one mariadb mariadbd
}

status() {
  local rc=0 p
  if p="$(pid_of kafka kafka.Kafka)"; then say "kafka     up   pid $p   bootstrap 127.0.0.1:$KAFKA_PORT"; else say "kafka     down"; rc=1; fi
  if p="$(pid_of mariadb mariadbd)"; then say "mariadb   up   pid $p   mysql://$MYSQL_USER:***@127.0.0.1:$MYSQL_PORT/$MYSQL_DATABASE"; else say "mariadb   down"; rc=1; fi
  if p="$(pid_of ferretdb ferretdb)"; then say "ferretdb  up   pid $p   mongodb://127.0.0.1:$MONGO_PORT"; else say "ferretdb  down"; rc=1; fi
  say "data: $DATA   logs: $RUN"
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) mkdir -p "$RUN"; status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
