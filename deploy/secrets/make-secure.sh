#!/usr/bin/env bash
# Writes the throw-away certificates and passwords that deploy/compose.secure.yml mounts as
# compose secrets, into deploy/secrets/secure/ (gitignored). Idempotent: a file that exists is
# kept; delete the directory to start over (new CA, new passwords). Needs only openssl.
#
#   bash deploy/secrets/make-secure.sh
#   docker compose -f deploy/docker-compose.yml -f deploy/compose.secure.yml up -d --build
#
# THROW-AWAY: a CA made here is for trying the secure compose file on one machine. In
# production bring your own CA (or your provider's), and issue the server certificates and
# passwords with your secret manager; the compose file only needs files at the same names.
#
# What it writes (all PEM unless said otherwise):
#   ca.pem, ca.key          the CA (ca.key is never mounted into a container)
#   kafka-N.p12             broker N's PKCS#12 keystore (key + certificate + CA), N = 1..3;
#                           CN=kafka-N, SAN kafka-N, localhost, 127.0.0.1; serverAuth and clientAuth
#                           (the controller listener is mutual TLS between the brokers)
#   mysql-server.pem/.key   MySQL's certificate (SAN mysql, localhost, 127.0.0.1) and key
#   mongo-server.pem        MongoDB's certificate followed by its key (mongod's
#                           --tlsCertificateKeyFile takes both in one file; SAN mongo, localhost)
#   *.password, api.token   one random password per user (hex, no trailing newline):
#                           kafka-keystore, kafka-admin, kafka-etl-extract, kafka-etl-clean,
#                           kafka-etl-score, kafka-etl-sink-mysql, kafka-etl-sink-mongo,
#                           kafka-schema-registry, kafka-kafdrop, mysql-etl (the database owner),
#                           mysql-etl_sink (sink-mysql's user), mongo-root, mongo-etl_sink_mongo
#   kafka-server-jaas.conf          the brokers' inter-broker SCRAM login (user admin)
#   kafka-admin-client.properties   admin client settings for Kafka's own tools (healthchecks,
#                                   the kafka-setup one-shot)
#   schema-registry-jaas.conf       the schema registry's SCRAM login (user schema-registry)
#   kafdrop-kafka.properties        Kafdrop's client settings (user kafdrop)
# The last four are made from the passwords on every run.
#
# Modes: the directory is 0700 (only you, and the container engine, can open it); the files
# in it are 0644 except ca.key (0600). Compose implements file secrets as bind mounts that keep
# the host file's mode and owner (it does not apply uid/gid/mode to file secrets), and the
# containers read them as their own non-root users (mysql and mongodb 999, Kafka's appuser,
# etl-pipe 10001): a 0600 file owned by you would be unreadable to them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
OUT="${ETL_SECURE_OUT:-$PWD/secure}"
DAYS="${ETL_SECURE_DAYS:-365}"
command -v openssl >/dev/null || { echo "openssl not found (Debian: apt-get install openssl)" >&2; exit 1; }

mkdir -p "$OUT"
chmod 700 "$OUT"
cd "$OUT"
umask 022
made=()

password() { # password NAME: a random hex password in NAME.password, if absent
  local f="$1.password"
  if [[ ! -s "$f" ]]; then
    printf '%s' "$(openssl rand -hex 24)" >"$f"
    made+=("$f")
  fi
}

for p in kafka-keystore kafka-admin kafka-etl-extract kafka-etl-clean kafka-etl-score \
  kafka-etl-sink-mysql kafka-etl-sink-mongo kafka-schema-registry kafka-kafdrop \
  mysql-etl mysql-etl_sink mongo-root mongo-etl_sink_mongo; do
  password "$p"
done
if [[ ! -s api.token ]]; then
  printf '%s' "$(openssl rand -hex 24)" >api.token
  made+=(api.token)
fi

# ---------------------------------------------------------------- CA
if [[ ! -s ca.pem || ! -s ca.key ]]; then
  # A new CA invalidates every certificate signed by the old one.
  rm -f ca.pem ca.key ca.srl kafka-?.p12 kafka-?.pem mysql-server.pem mysql-server.key mongo-server.pem
  (umask 077 && openssl req -x509 -newkey rsa:3072 -nodes -sha256 -days "$DAYS" \
    -keyout ca.key -out ca.pem -subj "/CN=etl-pipe compose throw-away CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign") 2>/dev/null
  chmod 600 ca.key
  chmod 644 ca.pem
  made+=(ca.pem ca.key)
fi

# cert NAME CN SANS EKU: NAME.key and NAME.pem signed by the CA (the key 0600 until used)
cert() {
  local name="$1" cn="$2" sans="$3" eku="$4" tmp
  tmp="$(mktemp -d)"
  (umask 077 && openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$name.key" \
    -out "$tmp/req.csr" -subj "/CN=$cn") 2>/dev/null
  printf '%s\n' "subjectAltName=$sans" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=$eku" >"$tmp/ext"
  openssl x509 -req -sha256 -days "$DAYS" -in "$tmp/req.csr" -CA ca.pem -CAkey ca.key \
    -CAcreateserial -extfile "$tmp/ext" -out "$name.pem" 2>/dev/null
  rm -rf "$tmp"
}

# ---------------------------------------------------------------- Kafka brokers
for n in 1 2 3; do
  if [[ ! -s "kafka-$n.p12" ]]; then
    cert "kafka-$n" "kafka-$n" "DNS:kafka-$n,DNS:localhost,IP:127.0.0.1" "serverAuth,clientAuth"
    openssl pkcs12 -export -in "kafka-$n.pem" -inkey "kafka-$n.key" -certfile ca.pem \
      -name "kafka-$n" -out "kafka-$n.p12" -passout "file:kafka-keystore.password"
    rm -f "kafka-$n.key" # the keystore holds it
    chmod 644 "kafka-$n.p12" "kafka-$n.pem"
    made+=("kafka-$n.p12")
  fi
done

# ---------------------------------------------------------------- MySQL, MongoDB
if [[ ! -s mysql-server.pem || ! -s mysql-server.key ]]; then
  cert mysql-server mysql "DNS:mysql,DNS:localhost,IP:127.0.0.1" serverAuth
  chmod 644 mysql-server.pem mysql-server.key
  made+=(mysql-server.pem mysql-server.key)
fi
if [[ ! -s mongo-server.pem ]]; then
  cert mongo-cert mongo "DNS:mongo,DNS:localhost,IP:127.0.0.1" serverAuth
  cat mongo-cert.pem mongo-cert.key >mongo-server.pem
  rm -f mongo-cert.pem mongo-cert.key
  chmod 644 mongo-server.pem
  made+=(mongo-server.pem)
fi

# ---------------------------------------------------------------- client settings (from the passwords)
pw() { cat "$1.password"; }
scram_login() { # scram_login USER PASSWORD-NAME: a JAAS login module line
  printf 'org.apache.kafka.common.security.scram.ScramLoginModule required username="%s" password="%s";' "$1" "$(pw "$2")"
}
{
  echo "KafkaServer {"
  echo "  $(scram_login admin kafka-admin)"
  echo "};"
} >kafka-server-jaas.conf
cat >kafka-admin-client.properties <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$(scram_login admin kafka-admin)
ssl.truststore.type=PEM
ssl.truststore.location=/etc/kafka/secrets/ca.pem
PROPS
{
  echo "KafkaClient {"
  echo "  $(scram_login schema-registry kafka-schema-registry)"
  echo "};"
} >schema-registry-jaas.conf
cat >kafdrop-kafka.properties <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$(scram_login kafdrop kafka-kafdrop)
ssl.truststore.type=PEM
ssl.truststore.location=/run/secrets/etl_ca
PROPS
chmod 644 ./*.password api.token kafka-server-jaas.conf kafka-admin-client.properties \
  schema-registry-jaas.conf kafdrop-kafka.properties

# ---------------------------------------------------------------- check and report
for n in 1 2 3; do
  openssl verify -CAfile ca.pem "kafka-$n.pem" >/dev/null
done
openssl verify -CAfile ca.pem mysql-server.pem >/dev/null
openssl x509 -in mongo-server.pem -noout 2>/dev/null
echo "[make-secure] $OUT"
if ((${#made[@]})); then
  echo "[make-secure] made: ${made[*]}"
else
  echo "[make-secure] nothing new (delete the directory to start over)"
fi
echo "[make-secure] client settings rewritten from the passwords: kafka-server-jaas.conf kafka-admin-client.properties schema-registry-jaas.conf kafdrop-kafka.properties"
echo "[make-secure] throw-away CA: in production use your own CA and secret manager (README, 'Secure compose / Kubernetes')"
