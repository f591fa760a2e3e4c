#!/usr/bin/env bash
# One-shot set-up of a Prefect server for irsflow: the work pools, the `gpu` tag limit, the
# zombie-run automation and every deployment. docker-compose.yml runs it as the `setup` service;
# by hand, from the repository root of any machine with the project installed:
#   PREFECT_API_URL=http://HOST:4200/api IRSFLOW_WORK_POOLS=docker bash infra/docker/setup.sh
# IRSFLOW_WORK_POOLS picks the kind of pools and the deployments file that targets them:
#   process     gpu, cpu                 workers run flows as processes (compose's gpu-worker, cpu-worker)   prefect.yaml
#   docker      gpu-docker, cpu-docker   a container per flow run (templates deployments/pools/docker-*.json)   deployments/prefect.docker.yaml
#   kubernetes  gpu-k8s, cpu-k8s         a Job per flow run, nvidia.com/gpu: 1 (deployments/pools/k8s-*.json)    deployments/prefect.k8s.yaml
# The gpu pool's flow-run concurrency and the `gpu` tag limit are both IRSFLOW_GPU_SLOTS: the number
# of GPUs serving the pool, all machines together (default 1). Re-running updates everything.
set -euo pipefail
cd "$(dirname "$0")/../.."

kind="${IRSFLOW_WORK_POOLS:-process}"
slots="${IRSFLOW_GPU_SLOTS:-1}"
case "$kind" in
    process)    gpu=gpu        cpu=cpu        file=prefect.yaml ;;
    docker)     gpu=gpu-docker cpu=cpu-docker file=deployments/prefect.docker.yaml ;;
    kubernetes) gpu=gpu-k8s    cpu=cpu-k8s    file=deployments/prefect.k8s.yaml ;;
    *) echo "setup: IRSFLOW_WORK_POOLS=$kind: expected process, docker or kubernetes" >&2; exit 2 ;;
esac
[[ "$slots" =~ ^[1-9][0-9]*$ ]] || { echo "setup: IRSFLOW_GPU_SLOTS=$slots: expected a whole number >= 1" >&2; exit 2; }
: "${PREFECT_API_URL:?setup: set PREFECT_API_URL, e.g. http://prefect-server:4200/api}"

echo "setup: waiting for the Prefect server at $PREFECT_API_URL"
for _ in $(seq 60); do
    sh infra/docker/healthcheck.sh "$PREFECT_API_URL/health" 2>/dev/null && break
    sleep 2
done
sh infra/docker/healthcheck.sh "$PREFECT_API_URL/health" \
    || { echo "setup: no healthy Prefect server at $PREFECT_API_URL after 120 s" >&2; exit 1; }

pool() {  # NAME: create it, or update its job template (a pool's type cannot change)
    if [ "$kind" = process ]; then
        prefect --no-prompt work-pool create "$1" --type process --overwrite
    else  # deployments/pools/{docker,k8s}-{gpu,cpu}.json
        prefect --no-prompt work-pool create "$1" --type "$kind" --overwrite --base-job-template "deployments/pools/${kind/kubernetes/k8s}-${1%%-*}.json"
    fi
}
pool "$gpu"
pool "$cpu"
prefect --no-prompt work-pool set-concurrency-limit "$gpu" "$slots"
prefect --no-prompt work-pool clear-concurrency-limit "$cpu"
# An upsert: a second GPU machine raises the limit to the new IRSFLOW_GPU_SLOTS on the next run.
prefect --no-prompt concurrency-limit create gpu "$slots"
python - <<'PY'
from prefect import get_client

from deployments.stack import ensure_zombie_automation

with get_client(sync_client=True) as client:
    ensure_zombie_automation(client)
PY
prefect --no-prompt deploy --all --prefect-file "$file"
# deployments an older irsflow created under since-renamed names: their schedules move to the new ones
python - <<'PY'
from prefect import get_client

from deployments.stack import migrate_renamed_deployments

with get_client(sync_client=True) as client:
    for line in migrate_renamed_deployments(client):
        print("setup:", line)
PY
echo "setup: pools $gpu (concurrency $slots) and $cpu, tag limit gpu=$slots, deployments of $file"
