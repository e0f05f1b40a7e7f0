#!/bin/sh
# The Kafka container's command (apache/kafka image, user appuser): renders server.properties with the admin's
# password, formats the storage once with the admin's SCRAM credential, then runs the broker.
#
# KRaft keeps SCRAM credentials in its metadata log, so the first principal must be written when the storage is
# formatted (`kafka-storage.sh format --add-scram`, KIP-900); the image's own launch script formats without it.
# Every other principal and the ACLs are created by the kafka-setup job, as this admin.
set -eu

password="${LETHE_KAFKA_PASSWORD_ADMIN:?set KAFKA_PASSWORD_ADMIN}"
external_host="${LETHE_KAFKA_EXTERNAL_HOST:-localhost}"
# The password goes into a JAAS line and the --add-scram argument unquoted: refuse what either would misread.
case "$password" in
  *[!A-Za-z0-9._~-]*) echo "KAFKA_PASSWORD_ADMIN may hold only letters, digits and . _ ~ - (openssl rand -hex 32)" >&2; exit 2 ;;
esac
case "$external_host" in
  *[!A-Za-z0-9.-]* | "") echo "KAFKA_EXTERNAL_HOST must be a host name or an IPv4 address" >&2; exit 2 ;;
esac

template=/etc/lethe/kafka/server.properties
conf=/opt/kafka/config/lethe  # writable by appuser in the image; not a volume, so rendered at every start
mkdir -p "$conf"
umask 077
sed -e "s/@ADMIN_PASSWORD@/$password/g" -e "s/@EXTERNAL_HOST@/$external_host/g" "$template" >"$conf/server.properties"
# The healthcheck's client: it authenticates like any other.
cat >"$conf/admin.properties" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$password";
PROPERTIES

data="$(sed -n 's/^log\.dirs=//p' "$conf/server.properties")"
if [ ! -f "$data/meta.properties" ]; then
  echo "formatting $data (once), with the admin's SCRAM credential"
  /opt/kafka/bin/kafka-storage.sh format --standalone -c "$conf/server.properties" \
    -t "$(/opt/kafka/bin/kafka-storage.sh random-uuid)" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$password]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$conf/server.properties"
