#!/usr/bin/env bash
# Runs the three images the way deploy/k8s runs them: read-only root filesystem,
# a tmpfs on /tmp (the emptyDir), every capability dropped, no-new-privileges,
# uid/gid 10001; against PostgreSQL, Redis and MailDev on a Docker network of
# its own. Proves each container starts and passes its image's health check,
# that the migration runs read-only, and that the API's init container
# (base/wait_for_schema.py) waits before the migration and passes after it.
#   HERALD_IMAGE_TAG=k8s docker compose build api notifier scheduler
#   deploy/k8s/readonly-smoke.sh [TAG]
# Everything it creates is named herald-k8s-smoke-* and removed at exit.
set -euo pipefail
TAG=${1:-k8s}
P=herald-k8s-smoke
NET=$P-net
HERE=$(cd "$(dirname "$0")" && pwd)
cleanup() {
  docker rm -f $P-api $P-notifier $P-scheduler $P-postgres $P-redis $P-maildev >/dev/null 2>&1 || true
  docker network rm $NET >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
docker network create $NET >/dev/null
docker run -d --name $P-postgres --network $NET -e POSTGRES_USER=herald -e POSTGRES_DB=herald \
  -e POSTGRES_PASSWORD=smoke postgres:17-alpine >/dev/null
docker run -d --name $P-redis --network $NET redis:7-alpine >/dev/null
docker run -d --name $P-maildev --network $NET maildev/maildev:2.2.1 >/dev/null
until docker exec $P-postgres pg_isready -U herald -d herald >/dev/null 2>&1; do sleep 1; done
# pg_isready answers during the image's init restart; wait for a real query.
until docker exec $P-postgres psql -U herald -d herald -c 'SELECT 1' >/dev/null 2>&1; do sleep 1; done

RESTRICTED=(--read-only --tmpfs /tmp:rw,noexec,nosuid,size=64m --cap-drop ALL
  --security-opt no-new-privileges --user 10001:10001 --network $NET)
DB=postgresql+asyncpg://herald:smoke@$P-postgres:5432/herald
COMMON=(-e HERALD_REDIS_URL=redis://$P-redis:6379/0 -e HERALD_LOG_FORMAT=json
  -e HERALD_LINK_SECRET=smoke-link-secret-0123456789-0123456789)
API_ENV=("${COMMON[@]}" -e HERALD_DATABASE_URL=$DB -e HERALD_HASH_WORKERS=2
  -e HERALD_JWT_SECRET=smoke-jwt-secret-0123456789-0123456789
  -e HERALD_INTERNAL_TOKEN=smoke-internal-token-0123)
WAIT=(-v "$HERE/base/wait_for_schema.py:/opt/herald/wait_for_schema.py:ro")

step() { printf '%-58s %s\n' "$1" "$2"; }

if docker run --rm "${RESTRICTED[@]}" "${API_ENV[@]}" "${WAIT[@]}" -e HERALD_SCHEMA_WAIT_SECONDS=4 \
  herald-api:$TAG python /opt/herald/wait_for_schema.py >/tmp/$P-wait1.log 2>&1; then
  step "wait_for_schema before the migration" "FAIL (passed on an empty database)"; exit 1
fi
step "wait_for_schema before the migration" "waits, exits 1 at its deadline: ok"
docker run --rm "${RESTRICTED[@]}" "${API_ENV[@]}" herald-api:$TAG herald-api migrate >/tmp/$P-migrate.log 2>&1 \
  || { cat /tmp/$P-migrate.log; step "herald-api migrate (read-only)" FAIL; exit 1; }
step "herald-api migrate (read-only)" ok
docker run --rm "${RESTRICTED[@]}" "${API_ENV[@]}" "${WAIT[@]}" -e HERALD_SCHEMA_WAIT_SECONDS=4 \
  herald-api:$TAG python /opt/herald/wait_for_schema.py >/tmp/$P-wait2.log 2>&1 \
  || { cat /tmp/$P-wait2.log; step "wait_for_schema after the migration" FAIL; exit 1; }
step "wait_for_schema after the migration" "exits 0: ok"

docker run -d --name $P-api "${RESTRICTED[@]}" "${API_ENV[@]}" herald-api:$TAG >/dev/null
docker run -d --name $P-notifier "${RESTRICTED[@]}" "${COMMON[@]}" -e HERALD_SMTP_HOST=$P-maildev \
  -e HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS=20 herald-notifier:$TAG >/dev/null
docker run -d --name $P-scheduler "${RESTRICTED[@]}" "${COMMON[@]}" -e HERALD_API_URL=http://$P-api:8000 \
  -e HERALD_INTERNAL_TOKEN=smoke-internal-token-0123 -e HERALD_SCHEDULER_SHUTDOWN_GRACE_SECONDS=2 \
  herald-scheduler:$TAG >/dev/null
status=0
for svc in api notifier scheduler; do
  health=starting
  for _ in $(seq 60); do
    health=$(docker inspect --format '{{.State.Health.Status}}' $P-$svc 2>/dev/null || echo gone)
    [[ $health == starting ]] || break
    sleep 1
  done
  step "$svc: health check (read-only, uid 10001, no caps)" "$health"
  [[ $health == healthy ]] || { docker logs --tail 20 $P-$svc; status=1; }
done
docker exec $P-api python -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/health/live').read().decode())" \
  | grep -q ok && step "api: /health/live (the liveness probe)" ok || { step "api: /health/live" FAIL; status=1; }
for svc in api notifier scheduler; do
  rss=$(docker exec $P-$svc sh -c 'grep VmRSS /proc/1/status' | awk '{print $2/1024 " MiB"}')
  writes=$(docker exec $P-$svc sh -c 'find /tmp -mindepth 1 | wc -l')
  step "$svc: idle RSS / entries written in /tmp" "$rss / $writes"
done
# The SIGTERM path: the notifier must stop within its grace + SAQ's 1 s deadline.
start=$(date +%s)
docker stop -t 30 $P-notifier >/dev/null
step "notifier: docker stop (grace 20 s + 1 s) took" "$(( $(date +%s) - start )) s"
exit $status
