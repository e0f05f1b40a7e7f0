#!/bin/sh
# The S3 container's entrypoint (chrislusf/seaweedfs image, started as root): writes lethe's S3 identity from the
# required credentials, readable by the seaweed user alone, then hands over to the image's own entrypoint, which
# makes /data the seaweed user's and drops to it.
set -eu

key="${LETHE_S3_ACCESS_KEY_ID:?set LETHE_S3_ACCESS_KEY_ID}"
secret="${LETHE_S3_SECRET_ACCESS_KEY:?set LETHE_S3_SECRET_ACCESS_KEY}"
# Both go into JSON unescaped: refuse what would need escaping.
for value in "$key" "$secret"; do
  case "$value" in
    *[!A-Za-z0-9._~+/=-]*) echo "the S3 credentials may hold only letters, digits and . _ ~ + / = -" >&2; exit 2 ;;
  esac
done

config=/etc/seaweedfs/lethe-s3.json
umask 077
cat >"$config" <<JSON
{"identities": [{"name": "lethe", "credentials": [{"accessKey": "$key", "secretKey": "$secret"}],
                 "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
chown seaweed:seaweed "$config"
exec /entrypoint.sh "$@" -s3.config="$config"
