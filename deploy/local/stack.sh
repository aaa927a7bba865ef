#!/usr/bin/env bash
# Local stack for etl-pipe: Apache Kafka (KRaft), MariaDB, FerretDB and a schema registry
# (Apicurio Registry, Confluent-compatible API) on loopback.
#
#   deploy/local/stack.sh up      install what is missing (once), start what is not running, wait until ready
#   deploy/local/stack.sh install install what is missing (once), start nothing
#   deploy/local/stack.sh down    stop what `up` started (by pid file only; see "down" below)
#   deploy/local/stack.sh status  show what runs where (exit 1 if something is down)
#   deploy/local/stack.sh broker-stop N    cluster: stop node N (1..3) with SIGTERM, wait until it is gone
#   deploy/local/stack.sh broker-start N   cluster: start node N again, wait until it answers
#   deploy/local/stack.sh preferred-leaders  cluster: every partition led by its preferred replica again
#   deploy/local/stack.sh mariadb-restart   stop MariaDB (SIGTERM, by pid file) if it runs, start it, wait until it answers
#   deploy/local/stack.sh ferretdb-restart  the same for FerretDB (failure tests: a database goes away mid-run)
#
# Profile: ETL_STACK_PROFILE=single (default), cluster or secure. All can run at the same time.
#   secure   TLS and authentication everywhere, its own Kafka (SASL_SSL + SCRAM-SHA-512 + ACLs,
#            127.0.0.1:9192), MariaDB (TLS required, 127.0.0.1:3307) and FerretDB (TLS only,
#            127.0.0.1:27018), a throw-away CA: see deploy/local/secure.sh. Its up/down/status
#            concern only those; it shares nothing with the other profiles but the installs.
#   single   one Kafka 4.1 node, broker+controller, 127.0.0.1:9092 (controller 9093), one-node
#            settings (replication 1). Pid file kafka, data in data/kafka.
#   cluster  three Kafka 4.1 KRaft nodes, each broker+controller (node.id 1,2,3), production
#            replication settings (RF 3, min ISR 2, no unclean election):
#              node 1  broker 127.0.0.1:19092  controller 127.0.0.1:19093
#              node 2  broker 127.0.0.1:19192  controller 127.0.0.1:19193
#              node 3  broker 127.0.0.1:19292  controller 127.0.0.1:19293
#            All below Linux's ephemeral range (32768-60999): a client retrying a stopped node's
#            port in that range can be given the port itself as its local port (a TCP
#            self-connect), and the node cannot bind it again (seen here with 39092).
#            (ETL_CLUSTER_BROKER_PORTS / ETL_CLUSTER_CONTROLLER_PORTS: three ports each, space
#            separated). Pid files kafka-node1..3, data in data/kafka-cluster/nodeN, the cluster id
#            in data/kafka-cluster/cluster.id. `up` prints the bootstrap list and writes it to
#            run/cluster.bootstrap (removed by `down`).
# Shared by both profiles (one process each, whichever profile started it):
#   MariaDB 127.0.0.1:3306, FerretDB 127.0.0.1:27017, and the registry: Apicurio Registry 3.3.3,
#   in-memory storage (schemas are gone after a restart), Confluent API at
#   http://127.0.0.1:8081/apis/ccompat/v7, health at http://127.0.0.1:9081/health/ready
#   (ETL_REGISTRY_PORT, ETL_REGISTRY_MANAGEMENT_PORT; ETL_STACK_REGISTRY=0 leaves it out).
#   It needs Java 21+, found under /usr/lib/jvm, $JAVA_HOME or PATH (or ETL_REGISTRY_JAVA).
#   FerretDB stores its data in SQLite files (data/ferretdb; no extra server): measured faster
#   here than on PostgreSQL (issue #18: sink-mongo 6 700 vs 4 200 documents/s, insert_many
#   9 150 vs 5 000). ETL_FERRETDB_BACKEND=postgresql stores it in PostgreSQL instead (Debian's
#   postgresql package, a server of the stack's own on 127.0.0.1:5432 = ETL_POSTGRES_PORT, data
#   in data/postgres, or /var/lib/postgresql/etl-pipe-stack when run as root;
#   ETL_POSTGRES_DATA overrides).
# down: stops the profile's Kafka; the shared services go down with the last Kafka profile
#   standing (a `down` of one profile leaves them running while the other profile's Kafka runs).
#
# Everything lives under $ETL_STACK_HOME (default ~/.local/share/etl-pipe-stack):
#   cache/  downloaded/built software (Kafka jars, FerretDB binary, Apicurio) -- kept between runs
#   data/   Kafka log dirs, MariaDB datadir, FerretDB state (and SQLite files with that backend)
#   run/    pid files and service logs
set -euo pipefail

STACK_HOME="${ETL_STACK_HOME:-$HOME/.local/share/etl-pipe-stack}"
CACHE="$STACK_HOME/cache"
DATA="${ETL_STACK_DATA:-$STACK_HOME/data}"
RUN="$STACK_HOME/run"

# KAFKA_VERSION, LOG4J_VERSION, FERRETDB_VERSION, REGISTRY_VERSION (shared with the images).
# shellcheck source=deploy/local/versions.sh
source "$(dirname "${BASH_SOURCE[0]}")/versions.sh"

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
# FerretDB's storage: sqlite (default; files under data/ferretdb, no extra server) or
# postgresql (a PostgreSQL server of the stack's own on PG_PORT).
FERRETDB_BACKEND="${ETL_FERRETDB_BACKEND:-sqlite}"
# FerretDB's Go garbage collector target (GOGC; Go's default is 100). At 100 a quarter of
# FerretDB's CPU went to garbage collection while the sinks wrote (perf); at 400 the same
# bench-sink run (200 000 documents) took 31-37 instead of 51-57 CPU seconds of FerretDB and
# sink-mongo wrote 8 836-11 110 instead of 7 264-7 860 documents/s, for ~30 MiB more RSS
# (91-94 vs 63 MiB). README "Local stack".
FERRETDB_GOGC="${ETL_FERRETDB_GOGC:-400}"
PG_PORT="${ETL_POSTGRES_PORT:-5432}"
PG_PASSWORD="${ETL_POSTGRES_PASSWORD:-ferretdb}"

PROFILE="${ETL_STACK_PROFILE:-single}"
# Ports far from the single broker's 9092/9093, so both profiles can run side by side.
read -r -a CLUSTER_BROKER_PORTS <<<"${ETL_CLUSTER_BROKER_PORTS:-19092 19192 19292}"
read -r -a CLUSTER_CONTROLLER_PORTS <<<"${ETL_CLUSTER_CONTROLLER_PORTS:-19093 19193 19293}"
CLUSTER_HEAP="${ETL_CLUSTER_HEAP:-512m}"
CLUSTER_DATA="$DATA/kafka-cluster"
CLUSTER_NODES=(1 2 3)

REGISTRY_ENABLED="${ETL_STACK_REGISTRY:-1}"
REGISTRY_PORT="${ETL_REGISTRY_PORT:-8081}"
# Quarkus puts health on a separate management port, 9000 by default -- Kafdrop's port: move it.
REGISTRY_MGMT_PORT="${ETL_REGISTRY_MANAGEMENT_PORT:-9081}"
REGISTRY_HOME="$CACHE/apicurio-$REGISTRY_VERSION"
REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"
REGISTRY_JAVA=""

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

wait_for() { # wait_for NAME SECONDS CHECK-FUNCTION PROC-MATCH [CHECK-ARGS...]
  local name="$1" secs="$2" check="$3" match="$4" i
  shift 4
  for ((i = 0; i < secs * 2; i++)); do
    if "$check" "$@" >/dev/null 2>&1; then return 0; fi
    # Confirmed after a pause: /proc/PID/cmdline reads empty while the process execs (nohup →
    # the server), which once passed for "exited" during a MariaDB restart under load.
    if ! pid_of "$name" "$match" >/dev/null && { sleep 1; ! pid_of "$name" "$match" >/dev/null; }; then
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
  KAFKA_HEAP_OPTS="" nohup java -Xms256m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -cp "$KAFKA_LOG_BINDING/*:$KAFKA_LIB/*" \
    -Dlog4j2.configurationFile="$RUN/kafka-log4j2.properties" kafka.Kafka "$props" >"$RUN/kafka.log" 2>&1 &
  echo $! >"$RUN/kafka.pid"
}

# ---------------------------------------------------------------- Kafka cluster (profile cluster)
# Three combined broker+controller nodes: a 3-voter KRaft quorum survives one node down, like the
# production layout, for half the JVMs of separate controllers (6 JVMs do not fit 2 cores well).
# The voters are static (controller.quorum.voters), so every node is formatted the same way with
# one cluster id, and no node needs the others to be up to be formatted.
node_name() { echo "kafka-node$1"; }
node_match() { echo "kafka-node$1.properties"; } # the node's own properties file is on its cmdline
node_broker_port() { echo "${CLUSTER_BROKER_PORTS[$(($1 - 1))]}"; }
node_controller_port() { echo "${CLUSTER_CONTROLLER_PORTS[$(($1 - 1))]}"; }

cluster_bootstrap() {
  local n out=""
  for n in "${CLUSTER_NODES[@]}"; do out+="${out:+,}127.0.0.1:$(node_broker_port "$n")"; done
  echo "$out"
}
cluster_voters() {
  local n out=""
  for n in "${CLUSTER_NODES[@]}"; do out+="${out:+,}$n@127.0.0.1:$(node_controller_port "$n")"; done
  echo "$out"
}

# Kafka 4.1 pulls in slf4j-api 1.7, which does not see the slf4j 2 binding that install_kafka
# adds: the brokers would log nothing at all. Every broker gets the slf4j 1 binding from a
# folder of its own, ahead of the libs.
KAFKA_LOG_BINDING="$CACHE/log4j-slf4j-impl-$LOG4J_VERSION"
install_kafka_log_binding() {
  [[ -f "$KAFKA_LOG_BINDING/.complete" ]] && return 0
  need mvn "Apache Maven (Debian: maven)"
  mkdir -p "$KAFKA_LOG_BINDING"
  (cd "$KAFKA_LOG_BINDING" && mvn -B -q dependency:copy -Dartifact="org.apache.logging.log4j:log4j-slf4j-impl:$LOG4J_VERSION" \
    -DoutputDirectory="$KAFKA_LOG_BINDING" >"$RUN/log4j-binding-mvn.log" 2>&1) \
    || { tail -n 30 "$RUN/log4j-binding-mvn.log" >&2; die "downloading log4j-slf4j-impl failed"; }
  touch "$KAFKA_LOG_BINDING/.complete"
}

# Its own log4j file: the single broker's one is rewritten by every single-profile `up`.
cluster_java() { java -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$RUN/kafka-cluster-log4j2.properties" "$@"; }

write_cluster_config() { # write_cluster_config N
  local n="$1" dir="$CLUSTER_DATA/node$1"
  mkdir -p "$dir"
  cat >"$RUN/kafka-cluster-log4j2.properties" <<L4J
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
  # Production replication: every topic (internal ones included) on all 3 nodes, acks=all needs
  # 2 in sync, so one node can be down without stopping producers or transactions; an
  # out-of-sync replica never becomes leader (no silent data loss).
  cat >"$RUN/$(node_name "$n").properties" <<PROPS
process.roles=broker,controller
node.id=$n
listeners=PLAINTEXT://127.0.0.1:$(node_broker_port "$n"),CONTROLLER://127.0.0.1:$(node_controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(node_broker_port "$n")
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.quorum.voters=$(cluster_voters)
log.dirs=$dir
num.partitions=3
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
auto.create.topics.enable=false
offsets.topic.replication.factor=3
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
}

ephemeral_warn() { # ephemeral_warn PORT -- says so if the kernel may hand PORT out as a local port
  local lo hi
  read -r lo hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || return 0
  if (($1 >= lo && $1 <= hi)); then
    say "warning: port $1 is in the ephemeral range $lo-$hi: a client retrying it while the node is down can take it (TCP self-connect) and the node then fails to start"
  fi
}

cluster_layout_check() { # formatted storage is bound to the voter set: a changed one starts afresh
  local f="$CLUSTER_DATA/voters" n
  mkdir -p "$CLUSTER_DATA"
  local was="(not recorded)"
  [[ -f "$f" ]] && was="$(cat "$f")"
  if [[ -d "$CLUSTER_DATA/node1" && "$was" != "$(cluster_voters)" ]]; then
    for n in "${CLUSTER_NODES[@]}"; do
      pid_of "$(node_name "$n")" "$(node_match "$n")" >/dev/null && die "the cluster's ports changed ($was -> $(cluster_voters)) while nodes run: run down first"
    done
    say "the cluster's ports changed ($was -> $(cluster_voters)): removing its data ($CLUSTER_DATA) and formatting anew"
    rm -rf "$CLUSTER_DATA"
    mkdir -p "$CLUSTER_DATA"
  fi
  cluster_voters >"$f"
  for n in "${CLUSTER_NODES[@]}"; do ephemeral_warn "$(node_broker_port "$n")"; ephemeral_warn "$(node_controller_port "$n")"; done
}

cluster_id() { # the one cluster id all nodes are formatted with, made once
  local f="$CLUSTER_DATA/cluster.id"
  mkdir -p "$CLUSTER_DATA"
  if [[ ! -s "$f" ]]; then
    cluster_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 >"$f.tmp"
    [[ -s "$f.tmp" ]] || die "StorageTool random-uuid printed nothing"
    mv "$f.tmp" "$f"
  fi
  cat "$f"
}

start_cluster_node() { # start_cluster_node N -- starts it if it is not running; does not wait
  local n="$1" name port props
  name="$(node_name "$n")"; port="$(node_broker_port "$n")"; props="$RUN/$name.properties"
  if pid_of "$name" "$(node_match "$n")" >/dev/null; then say "$name already running (pid $(pid_of "$name" "$(node_match "$n")"))"; return 0; fi
  # Our node running without its pid file (a stop and a start that raced, e.g. a test's
  # teardown against a broker outage it had started): adopt it rather than refuse the port.
  local orphan
  orphan="$(pgrep -f -- "kafka.Kafka $props" | head -n1 || true)"
  if [[ -n "$orphan" ]]; then
    echo "$orphan" >"$RUN/$name.pid"
    say "$name already running (pid $orphan, pid file restored)"
    return 0
  fi
  port_free "$port" || die "port $port is taken by a process this script did not start (set ETL_CLUSTER_BROKER_PORTS)"
  port_free "$(node_controller_port "$n")" || die "port $(node_controller_port "$n") is taken by a process this script did not start (set ETL_CLUSTER_CONTROLLER_PORTS)"
  write_cluster_config "$n"
  if [[ ! -f "$CLUSTER_DATA/node$n/meta.properties" ]]; then
    cluster_java kafka.tools.StorageTool format -t "$(cluster_id)" -c "$props" >"$RUN/$name-format.log" 2>&1 \
      || { cat "$RUN/$name-format.log" >&2; die "formatting storage of $name failed"; }
  fi
  say "starting $name: broker 127.0.0.1:$port, controller 127.0.0.1:$(node_controller_port "$n")"
  KAFKA_HEAP_OPTS="" nohup java -Xms128m -Xmx"$CLUSTER_HEAP" -XX:+UseG1GC -cp "$KAFKA_LOG_BINDING/*:$KAFKA_LIB/*" \
    -Dlog4j2.configurationFile="$RUN/kafka-cluster-log4j2.properties" kafka.Kafka "$props" >>"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}

node_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$(node_broker_port "$1")") 2>/dev/null; }
node_ready() { # the node itself answers a metadata request
  timeout 60 java -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$RUN/kafka-cluster-log4j2.properties" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$(node_broker_port "$1")" --list >/dev/null 2>&1
}

wait_node() { # wait_node N -- until node N's broker answers
  local name; name="$(node_name "$1")"
  wait_for "$name" 90 node_port_open "$(node_match "$1")" "$1"
  wait_for "$name" 90 node_ready "$(node_match "$1")" "$1"
}

# The quorum has a leader and 3 voters, and each node is a registered, unfenced broker (the
# metadata answer lists only those): only then does a replication-factor-3 topic create succeed.
cluster_formed() {
  local out
  out="$(timeout 60 java -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$RUN/kafka-cluster-log4j2.properties" \
    org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-server "$(cluster_bootstrap)" describe --status 2>/dev/null)" || return 1
  grep -Eq '^LeaderId: +[0-9]+' <<<"$out" || return 1
  [[ "$(grep -E '^CurrentVoters:' <<<"$out" | grep -o '"id": *[0-9]*' | wc -l)" -eq 3 ]] || return 1
  out="$(timeout 60 java -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$RUN/kafka-cluster-log4j2.properties" \
    org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$(cluster_bootstrap)" 2>/dev/null)" || return 1
  [[ "$(grep '(id: [0-9]* rack' <<<"$out" | grep -vc 'isFenced: true')" -eq 3 ]]
}

cluster_running() { # true if any cluster node runs
  local n
  for n in "${CLUSTER_NODES[@]}"; do pid_of "$(node_name "$n")" "$(node_match "$n")" >/dev/null && return 0; done
  return 1
}

stop_cluster() {
  # SIGTERM to all nodes at once: stopped one by one, the last two would wait on a quorum that
  # is already gone before their controlled shutdown gives up.
  local n name pid pids=() i
  for n in "${CLUSTER_NODES[@]}"; do
    name="$(node_name "$n")"
    if pid="$(pid_of "$name" "$(node_match "$n")")"; then
      say "stopping $name (pid $pid)"; kill "$pid" 2>/dev/null || true; pids+=("$pid")
    else
      say "$name not running"
    fi
  done
  for pid in "${pids[@]}"; do
    for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then say "pid $pid did not stop in 30s; killing"; kill -9 "$pid" 2>/dev/null || true; fi
  done
  for n in "${CLUSTER_NODES[@]}"; do rm -f "$RUN/$(node_name "$n").pid"; done
  rm -f "$RUN/cluster.bootstrap"
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
  # 1 GiB of buffer pool: the pipeline's keys arrive in random order, and once a 1 M-row table
  # outgrows the pool every insert waits for a page read (256 MiB: LOAD DATA 13-16 k rows/s,
  # sink-mysql 7 k/s end to end; 1 GiB: 31 k and 11 k; README "Benchmarks").
  nohup "$MYSQLD" --no-defaults --user="$(id -un)" --datadir="$dir" --bind-address=127.0.0.1 --port="$MYSQL_PORT" \
    --socket="$RUN/mysqld.sock" --pid-file="$RUN/mariadbd.pid" --character-set-server=utf8mb4 \
    --collation-server=utf8mb4_unicode_ci --innodb-buffer-pool-size="${ETL_MARIADB_BUFFER_POOL:-1G}" --innodb-flush-log-at-trx-commit=1 \
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

ferretdb_handler_flags() { # the storage flags FerretDB runs with (also how a running one is recognised)
  if [[ "$FERRETDB_BACKEND" == postgresql ]]; then
    echo "--handler=postgresql --postgresql-url=postgres://ferretdb:$PG_PASSWORD@127.0.0.1:$PG_PORT/ferretdb"
  else
    echo "--handler=sqlite --sqlite-url=file:$DATA/ferretdb/"
  fi
}

start_ferretdb() {
  local pid
  if pid="$(pid_of ferretdb ferretdb)"; then
    if pid_of ferretdb "--handler=$FERRETDB_BACKEND" >/dev/null; then say "ferretdb already running (pid $pid)"; return 0; fi
    say "ferretdb runs on another storage backend than $FERRETDB_BACKEND (ETL_FERRETDB_BACKEND): restarting it"
    stop_one ferretdb ferretdb
  fi
  port_free "$MONGO_PORT" || die "port $MONGO_PORT is taken by a process this script did not start (set ETL_MONGO_PORT)"
  mkdir -p "$DATA/ferretdb"
  say "starting ferretdb ($FERRETDB_BACKEND storage) on 127.0.0.1:$MONGO_PORT"
  # shellcheck disable=SC2046 # the handler flags are one word each
  GOGC="$FERRETDB_GOGC" nohup "$FERRETDB_BIN" $(ferretdb_handler_flags) --listen-addr="127.0.0.1:$MONGO_PORT" \
    --state-dir="$DATA/ferretdb" --debug-addr=- --telemetry=disable --log-level=warn >"$RUN/ferretdb.log" 2>&1 &
  echo $! >"$RUN/ferretdb.pid"
}

# ---------------------------------------------------------------- PostgreSQL (FerretDB's storage)
# FerretDB's production backend. The SQLite backend wedged under concurrent writers and restarts
# (an update's transaction and a collection creation waiting on a connection an open cursor held;
# only a FerretDB restart helped), which the cluster test's faults hit; see the README.
PG_BIN=""
install_postgres() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [[ -x "$d/initdb" && -x "$d/postgres" ]] && PG_BIN="$d"; done
  [[ -n "$PG_BIN" ]] && return 0
  need apt-get "PostgreSQL 13+ (Debian: postgresql)"
  say "installing postgresql from Debian (apt-get)"
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql) \
    >"$RUN/apt-postgresql.log" 2>&1 || { tail -n 30 "$RUN/apt-postgresql.log" >&2; die "apt-get install postgresql failed"; }
  for d in /usr/lib/postgresql/*/bin; do [[ -x "$d/initdb" && -x "$d/postgres" ]] && PG_BIN="$d"; done
  [[ -n "$PG_BIN" ]] || die "postgresql installed but no initdb/postgres found under /usr/lib/postgresql"
}

# PostgreSQL refuses to run as root: as root it runs as the `postgres` user the Debian package
# makes, with its data outside root's home (which that user cannot enter).
pg_as() { if [[ "$(id -u)" == 0 ]]; then setpriv --reuid=postgres --regid=postgres --init-groups "$@"; else "$@"; fi; }
pg_data_dir() {
  if [[ -n "${ETL_POSTGRES_DATA:-}" ]]; then echo "$ETL_POSTGRES_DATA"
  elif [[ "$(id -u)" == 0 ]]; then echo "/var/lib/postgresql/etl-pipe-stack"
  else echo "$DATA/postgres"; fi
}
pg_psql() { pg_as "$PG_BIN/psql" -h "$(pg_data_dir)" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
postgres_ready() { pg_psql -d postgres -c 'SELECT 1'; }

start_postgres() {
  local dir
  dir="$(pg_data_dir)"
  if pid_of postgres "$dir" >/dev/null; then say "postgresql already running (pid $(pid_of postgres "$dir"))"; return 0; fi
  port_free "$PG_PORT" || die "port $PG_PORT is taken by a process this script did not start (set ETL_POSTGRES_PORT)"
  if [[ ! -f "$dir/PG_VERSION" ]]; then
    say "initialising PostgreSQL data directory $dir"
    mkdir -p "$dir"
    [[ "$(id -u)" == 0 ]] && chown postgres:postgres "$dir" && chmod 700 "$dir"
    # Trust only on the socket, which lives in the data directory (only its owner can reach it);
    # TCP on loopback needs the password.
    pg_as "$PG_BIN/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 \
      >"$RUN/postgres-init.log" 2>&1 || { cat "$RUN/postgres-init.log" >&2; die "initdb failed"; }
  fi
  say "starting postgresql on 127.0.0.1:$PG_PORT"
  local as=()
  [[ "$(id -u)" == 0 ]] && as=(setpriv --reuid=postgres --regid=postgres --init-groups)
  nohup "${as[@]}" "$PG_BIN/postgres" -D "$dir" -p "$PG_PORT" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories="$dir" -c max_connections=300 \
    -c shared_buffers=256MB >"$RUN/postgres.log" 2>&1 &
  echo $! >"$RUN/postgres.pid"
  wait_for postgres 60 postgres_ready "$dir"
  pg_psql -d postgres <<SQL
SELECT 'CREATE ROLE ferretdb LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ferretdb')\\gexec
ALTER ROLE ferretdb PASSWORD '$PG_PASSWORD';
SELECT 'CREATE DATABASE ferretdb OWNER ferretdb' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'ferretdb')\\gexec
SQL
}

# ---------------------------------------------------------------- schema registry (Apicurio)
java_major() { # java_major JAVA -- prints the feature version (8 for 1.8.0_x, 25 for 25.0.3)
  local v
  v="$("$1" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)"
  [[ -n "$v" ]] || return 1
  [[ "$v" == 1.* ]] && v="${v#1.}"
  echo "${v%%[.+-]*}"
}

find_java21() {
  # Apicurio 3 is built for Java 21 (class files version 65): Java 17, Debian 12's JDK, fails with
  # UnsupportedClassVersionError. Take the first JDK >= 21 among the usual places.
  local j m cands=()
  [[ -n "${ETL_REGISTRY_JAVA:-}" ]] && cands+=("$ETL_REGISTRY_JAVA")
  [[ -n "${JAVA_HOME:-}" ]] && cands+=("$JAVA_HOME/bin/java")
  command -v java >/dev/null 2>&1 && cands+=("$(command -v java)")
  for j in /usr/lib/jvm/*/bin/java; do cands+=("$j"); done
  for j in "${cands[@]}"; do
    [[ -x "$j" ]] || continue
    m="$(java_major "$j" 2>/dev/null)" || continue
    if [[ "$m" =~ ^[0-9]+$ ]] && ((m >= 21)); then REGISTRY_JAVA="$j"; return 0; fi
  done
  return 1
}

install_java21() {
  find_java21 && return 0
  # Debian 12 has no JDK 21 (bookworm stops at 17); later Debian releases do.
  need apt-get "a Java 21+ JDK (e.g. Temurin) under /usr/lib/jvm, or set ETL_REGISTRY_JAVA"
  local pkg
  apt-get update -q >"$RUN/apt-java.log" 2>&1 || true
  for pkg in openjdk-25-jre-headless openjdk-21-jre-headless; do
    if apt-cache policy "$pkg" 2>/dev/null | grep -Eq 'Candidate: [0-9]'; then
      say "installing $pkg from Debian (apt-get) for the schema registry"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >>"$RUN/apt-java.log" 2>&1 \
        || { tail -n 30 "$RUN/apt-java.log" >&2; die "apt-get install $pkg failed"; }
      find_java21 && return 0
    fi
  done
  die "the schema registry needs Java 21+: none found (ETL_REGISTRY_JAVA, JAVA_HOME, PATH, /usr/lib/jvm) and this Debian has no openjdk-21/25; install one, or ETL_STACK_REGISTRY=0 to go without the registry"
}

install_registry() {
  [[ -f "$REGISTRY_HOME/.complete" ]] && return 0
  need mvn "Apache Maven (Debian: maven)"
  # Maven Central carries the prebuilt Quarkus distribution as an attached tar.gz (classifier
  # `all`, ~151 MiB); the artifact's plain jar is only classes and does not run.
  say "installing Apicurio Registry $REGISTRY_VERSION from Maven Central into $REGISTRY_HOME"
  local tmp; tmp="$(mktemp -d)"
  if ! (cd "$tmp" && mvn -B -q dependency:copy -Dartifact="io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all" \
    -DoutputDirectory="$tmp" >"$tmp/mvn.log" 2>&1); then
    tail -n 30 "$tmp/mvn.log" >&2
    die "downloading Apicurio Registry failed (see above)"
  fi
  rm -rf "$REGISTRY_HOME"; mkdir -p "$REGISTRY_HOME"
  tar -xzf "$tmp/apicurio-registry-app-$REGISTRY_VERSION-all.tar.gz" -C "$REGISTRY_HOME" \
    || die "unpacking Apicurio Registry failed"
  [[ -f "$REGISTRY_HOME/quarkus-run.jar" ]] || die "no quarkus-run.jar in the Apicurio archive"
  touch "$REGISTRY_HOME/.complete"
  rm -rf "$tmp"
}

registry_match() { echo "apicurio-$REGISTRY_VERSION/quarkus-run.jar"; }
registry_ready() {
  curl -fsS -o /dev/null "http://127.0.0.1:$REGISTRY_MGMT_PORT/health/ready" \
    && curl -fsS -o /dev/null "$REGISTRY_URL/subjects"
}

start_registry() {
  if pid_of registry "$(registry_match)" >/dev/null; then say "registry already running (pid $(pid_of registry "$(registry_match)"))"; return 0; fi
  port_free "$REGISTRY_PORT" || die "port $REGISTRY_PORT is taken by a process this script did not start (set ETL_REGISTRY_PORT)"
  port_free "$REGISTRY_MGMT_PORT" || die "port $REGISTRY_MGMT_PORT is taken by a process this script did not start (set ETL_REGISTRY_MANAGEMENT_PORT)"
  mkdir -p "$DATA/registry"
  say "starting registry (Apicurio $REGISTRY_VERSION, in-memory) on 127.0.0.1:$REGISTRY_PORT with $REGISTRY_JAVA"
  # Small heap, serial GC and C1 only: a test registry holds a few schemas, and the full JIT
  # would cost seconds of both cores at start. Run from its own directory: Quarkus may write there.
  (cd "$DATA/registry" && exec nohup "$REGISTRY_JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
    -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$REGISTRY_MGMT_PORT" \
    -jar "$REGISTRY_HOME/quarkus-run.jar" >"$RUN/registry.log" 2>&1) &
  echo $! >"$RUN/registry.pid"
}

# ---------------------------------------------------------------- commands
install() { # everything `up` needs, installed once (also what deploy/podman/images.sh builds from)
  mkdir -p "$CACHE" "$DATA" "$RUN"
  install_mariadb
  install_kafka
  install_ferretdb
  if [[ "$FERRETDB_BACKEND" == postgresql ]]; then install_postgres; fi
  install_kafka_log_binding
  if registry_on; then
    need curl "curl (Debian: curl)"
    install_java21
    install_registry
  fi
}

up() {
  need python3 "Python 3 (Debian: python3)"
  install
  local n t0=$SECONDS
  if [[ "$PROFILE" == cluster ]]; then
    cluster_layout_check
    for n in "${CLUSTER_NODES[@]}"; do start_cluster_node "$n"; done
  else
    start_kafka
  fi
  if [[ "$FERRETDB_BACKEND" == postgresql ]]; then start_postgres; fi
  start_ferretdb
  start_mariadb
  if registry_on; then start_registry; fi
  wait_for ferretdb 60 mongo_ready ferretdb
  if [[ "$PROFILE" == cluster ]]; then
    for n in "${CLUSTER_NODES[@]}"; do wait_node "$n"; done
    # Each node answering is not enough: a topic with replication 3 needs all three registered.
    wait_for "$(node_name 1)" 120 cluster_formed "$(node_match 1)"
    say "kafka cluster ready after $((SECONDS - t0))s: 3 voters, 3 brokers"
    cluster_bootstrap >"$RUN/cluster.bootstrap"
  else
    wait_for kafka 90 kafka_port_open kafka.Kafka
    wait_for kafka 90 kafka_ready kafka.Kafka
  fi
  wait_for mariadb 60 mysql_ready "$(basename "$MYSQLD")"
  if registry_on; then
    wait_for registry 120 registry_ready "$(registry_match)"
    say "registry ready after $((SECONDS - t0))s"
  fi
  status
}

registry_on() { [[ "$REGISTRY_ENABLED" != 0 ]]; }

stop_one() { # stop_one NAME MATCH [SIGNAL]
  local name="$1" match="$2" sig="${3:-TERM}" pid i
  if pid="$(pid_of "$name" "$match")"; then
    say "stopping $name (pid $pid)"
    kill -s "$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then say "$name did not stop in 30s; killing"; kill -9 "$pid" 2>/dev/null || true; fi
  else
    say "$name not running"
  fi
  rm -f "$RUN/$name.pid"
}

down() {
  local other=""
  if [[ "$PROFILE" == cluster ]]; then
    stop_cluster
    pid_of kafka kafka.Kafka >/dev/null && other=single
  else
    stop_one kafka kafka.Kafka
    cluster_running && other=cluster
  fi
  # MariaDB, FerretDB and the registry serve both profiles: the last Kafka profile standing takes
  # them down, so stopping one profile never pulls the databases from under the other's tests.
  if [[ -n "$other" ]]; then
    say "leaving mariadb, ferretdb and registry running: the $other profile's Kafka still runs"
    return 0
  fi
  stop_one ferretdb ferretdb
  # SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for every client to leave).
  stop_one postgres "$(pg_data_dir)" INT
  stop_one mariadb mariadbd
  stop_one registry "$(registry_match)"
}

node_arg() { # node_arg N -- validates a node number
  if [[ ! "${1:-}" =~ ^[1-9][0-9]*$ ]] || ((${1} < 1 || ${1} > ${#CLUSTER_NODES[@]})); then
    die "usage: $0 broker-stop|broker-start N (N = 1..${#CLUSTER_NODES[@]})"
  fi
}

broker_stop() { # SIGTERM (a controlled shutdown: leadership moves first), wait until it is gone
  node_arg "${1:-}"
  stop_one "$(node_name "$1")" "$(node_match "$1")"
}

broker_start() { # start one node again (formatted storage is kept), wait until it answers
  node_arg "${1:-}"
  mkdir -p "$RUN"
  [[ -f "$KAFKA_LIB/.complete" && -f "$KAFKA_LOG_BINDING/.complete" ]] || die "Kafka is not installed: run ETL_STACK_PROFILE=cluster $0 up first"
  local t0=$SECONDS
  start_cluster_node "$1"
  wait_node "$1"
  say "$(node_name "$1") answers after $((SECONDS - t0))s (its replicas rejoin the ISR once caught up)"
}

# After nodes were away every partition they led is led by the others until Kafka's own
# rebalance (leader.imbalance.check.interval.seconds, 5 min): a test pausing the whole cluster
# left node 3 leading nearly every partition of __transaction_state, so a later test's
# coordinators all sat on one node. This moves leadership back at once, as after a rolling restart.
preferred_leaders() {
  [[ -f "$KAFKA_LIB/.complete" ]] || die "Kafka is not installed: run ETL_STACK_PROFILE=cluster $0 up first"
  mkdir -p "$RUN"
  cluster_java org.apache.kafka.tools.LeaderElectionCommand --bootstrap-server "$(cluster_bootstrap)" \
    --election-type PREFERRED --all-topic-partitions >"$RUN/leader-election.log" 2>&1 \
    || { tail -n 20 "$RUN/leader-election.log" >&2; die "preferred leader election failed (log: $RUN/leader-election.log)"; }
  say "preferred leader election done (log: $RUN/leader-election.log)"
}

mariadb_restart() { # idempotent: stops it if it runs (pid file), starts it, waits for a login
  mkdir -p "$RUN" "$DATA"
  install_mariadb
  local t0=$SECONDS
  stop_one mariadb mariadbd
  start_mariadb
  wait_for mariadb 60 mysql_ready "$(basename "$MYSQLD")"
  say "mariadb answers after $((SECONDS - t0))s"
}

ferretdb_restart() { # idempotent: stops it if it runs (pid file), starts it, waits for a ping
  mkdir -p "$RUN" "$DATA"
  [[ -x "$FERRETDB_BIN" ]] || die "FerretDB is not installed: run $0 up first"
  local t0=$SECONDS
  stop_one ferretdb ferretdb
  if [[ "$FERRETDB_BACKEND" == postgresql ]]; then install_postgres; start_postgres; fi
  start_ferretdb
  wait_for ferretdb 60 mongo_ready ferretdb
  say "ferretdb answers after $((SECONDS - t0))s"
}

status() {
  local rc=0 p n
  if [[ "$PROFILE" == cluster ]]; then
    for n in "${CLUSTER_NODES[@]}"; do
      if p="$(pid_of "$(node_name "$n")" "$(node_match "$n")")"; then
        say "$(node_name "$n") up   pid $p   broker 127.0.0.1:$(node_broker_port "$n")   controller 127.0.0.1:$(node_controller_port "$n")"
      else
        say "$(node_name "$n") down   (broker 127.0.0.1:$(node_broker_port "$n"))"; rc=1
      fi
    done
    say "bootstrap $(cluster_bootstrap)"
  else
    if p="$(pid_of kafka kafka.Kafka)"; then say "kafka     up   pid $p   bootstrap 127.0.0.1:$KAFKA_PORT"; else say "kafka     down"; rc=1; fi
  fi
  if p="$(pid_of mariadb mariadbd)"; then say "mariadb   up   pid $p   mysql://$MYSQL_USER:***@127.0.0.1:$MYSQL_PORT/$MYSQL_DATABASE"; else say "mariadb   down"; rc=1; fi
  if p="$(pid_of ferretdb ferretdb)"; then say "ferretdb  up   pid $p   mongodb://127.0.0.1:$MONGO_PORT   ($FERRETDB_BACKEND storage)"; else say "ferretdb  down"; rc=1; fi
  if [[ "$FERRETDB_BACKEND" == postgresql ]]; then
    if p="$(pid_of postgres "$(pg_data_dir)")"; then say "postgres  up   pid $p   127.0.0.1:$PG_PORT   (FerretDB's storage, data $(pg_data_dir))"; else say "postgres  down"; rc=1; fi
  fi
  if registry_on; then
    if p="$(pid_of registry "$(registry_match)")"; then
      say "registry  up   pid $p   $REGISTRY_URL   (health http://127.0.0.1:$REGISTRY_MGMT_PORT/health/ready)"
    else
      say "registry  down"; rc=1
    fi
  fi
  say "data: $DATA   logs: $RUN"
  return $rc
}

case "$FERRETDB_BACKEND" in
  postgresql | sqlite) ;;
  *) die "ETL_FERRETDB_BACKEND must be postgresql or sqlite, not '$FERRETDB_BACKEND'" ;;
esac
case "$PROFILE" in
  single | cluster) ;;
  secure) ;;
  *) die "ETL_STACK_PROFILE must be single, cluster or secure, not '$PROFILE'" ;;
esac
# ---------------------------------------------------------------- secure profile (own services)
# shellcheck source=deploy/local/secure.sh
source "$(dirname "${BASH_SOURCE[0]}")/secure.sh"
if [[ "$PROFILE" == secure ]]; then
  case "${1:-}" in
    up) secure_up ;;
    down) secure_down ;;
    status) mkdir -p "$RUN"; secure_status ;;
    *) echo "usage: ETL_STACK_PROFILE=secure $0 up|down|status" >&2; exit 2 ;;
  esac
  exit $?
fi
case "${1:-}" in
  up) up ;;
  install) install ;;
  down) down ;;
  status) mkdir -p "$RUN"; status ;;
  broker-stop) broker_stop "${2:-}" ;;
  broker-start) broker_start "${2:-}" ;;
  preferred-leaders) preferred_leaders ;;
  mariadb-restart) mariadb_restart ;;
  ferretdb-restart) ferretdb_restart ;;
  *) echo "usage: [ETL_STACK_PROFILE=single|cluster] $0 up|install|down|status|broker-stop N|broker-start N|preferred-leaders|mariadb-restart|ferretdb-restart" >&2; exit 2 ;;
esac
