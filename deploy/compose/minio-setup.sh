#!/bin/sh
# One-shot setup for the compose stack's MinIO (run by the minio-setup service with the minio/mc
# image): create the `uploads` bucket and send its object-created and object-removed
# notifications to the webhook target `switchyard` that docker-compose.yml configures on the
# MinIO server (MINIO_NOTIFY_WEBHOOK_*_SWITCHYARD -> http://switchyard:8080/ingest/s3/uploads).
# Safe to run again.
set -eu

bucket="${S3_BUCKET:-uploads}"
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "local/$bucket"

# The target id comes from the env var suffix (_SWITCHYARD); MinIO reports it in lower case in
# recent releases and upper case in older ones, so try both. Already-present rules are fine.
for arn in arn:minio:sqs::switchyard:webhook arn:minio:sqs::SWITCHYARD:webhook; do
  if out=$(mc event add "local/$bucket" "$arn" --event put,delete 2>&1); then
    echo "notifications of $bucket -> $arn"
    mc event list "local/$bucket"
    exit 0
  fi
  case "$out" in
    *"already exists"*|*"overlapping"*) echo "notifications of $bucket -> $arn (already set)"; exit 0 ;;
  esac
  echo "mc event add with $arn: $out" >&2
done
echo "could not add the bucket notification; is MINIO_NOTIFY_WEBHOOK_ENABLE_SWITCHYARD=on set on the server?" >&2
exit 1
