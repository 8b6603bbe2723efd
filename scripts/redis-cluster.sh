#!/usr/bin/env bash
# A local Redis Cluster for tests and benchmarks: 6 nodes (3 masters, 3 replicas) from the
# same redis-server binary, on spare ports, data in a cache directory outside the repository.
#
#   bash scripts/redis-cluster.sh start   # idempotent: a healthy cluster is left alone
#   bash scripts/redis-cluster.sh stop    # shuts every node down and forgets the cluster
#   bash scripts/redis-cluster.sh nodes   # prints the seeds: 127.0.0.1:30001,...
#
# A node killed by a test (the failover test kills a master) is started again by `start`,
# and rejoins as a replica of whoever took its slots.
#
# Environment:
#   REDIS_CLUSTER_PORT      first port (default: 30001; the nodes use it and the next ones)
#   REDIS_CLUSTER_DIR       data dir (default: $HOME/.cache/realtime-gateway-redis-cluster)
#   REDIS_CLUSTER_REPLICAS  replicas per master (default: 1, so 6 nodes; 0 gives 3 masters alone,
#                           as the benchmark's comparison with one Redis without a replica does:
#                           bench/README.md, "Sharded")
set -euo pipefail

FIRST_PORT="${REDIS_CLUSTER_PORT:-30001}"
DIR="${REDIS_CLUSTER_DIR:-$HOME/.cache/realtime-gateway-redis-cluster}"
REPLICAS="${REDIS_CLUSTER_REPLICAS:-1}"
NODES=$((3 * (1 + REPLICAS)))
PORTS=()
for ((i = 0; i < NODES; i++)); do PORTS+=($((FIRST_PORT + i))); done

log() { printf '[redis-cluster] %s\n' "$*"; }
die() { printf '[redis-cluster] ERROR: %s\n' "$*" >&2; exit 1; }
ping() { [[ "$(redis-cli -p "$1" ping 2>/dev/null || true)" == "PONG" ]]; }
cluster_ok() { redis-cli -p "$FIRST_PORT" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }
seeds() { local IFS=,; local list=(); for p in "${PORTS[@]}"; do list+=("127.0.0.1:$p"); done; echo "${list[*]}"; }

# A node listens on its port and on a cluster bus port. Redis's default bus port, port + 10000
# (40001-40006), lies in Linux's ephemeral range (32768-60999): a client connection holding
# that local port, or its TIME_WAIT, made a node exit with "bind: Address already in use"
# (seen when Kafka clients had just used 40006). The bus goes below the range instead,
# port - 10000 (20001-20006 by default).
# As docs/operations.md ("Sizing Redis") recommends for every Redis the gateway uses.
PUBSUB_LIMIT="pubsub 256mb 128mb 60"

bus_port() { if (($1 > 11024)); then echo $(($1 - 10000)); else echo $(($1 + 10000)); fi; }

launch_node() {
  local port="$1"
  # The node's own file remembers the cluster across restarts (a killed master rejoins).
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --dir "$DIR/$port" \
    --cluster-enabled yes --cluster-port "$(bus_port "$port")" \
    --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --save "" --appendonly no --maxmemory-policy noeviction --client-output-buffer-limit "$PUBSUB_LIMIT" \
    --logfile "$DIR/$port/redis.log" --pidfile "$DIR/$port/redis.pid"
}

# Whatever else holds a port for a moment, a node that did not come up is launched again.
start_node() {
  local port="$1"
  mkdir -p "$DIR/$port"
  # A node already up gets the pub/sub output buffer limit of launch_node too.
  ping "$port" && { redis-cli -p "$port" config set client-output-buffer-limit "$PUBSUB_LIMIT" >/dev/null 2>&1 || true; return 0; }
  for _attempt in 1 2 3; do
    ping "$port" && return 0
    launch_node "$port" || true
    for _ in $(seq 1 50); do ping "$port" && return 0; sleep 0.1; done
    log "node $port did not start; trying again (its log: $(tail -n 1 "$DIR/$port/redis.log" 2>/dev/null))"
    sleep 2
  done
  die "node $port did not start (log: $DIR/$port/redis.log)"
}

start() {
  command -v redis-server >/dev/null || die "redis-server is not installed"
  for port in "${PORTS[@]}"; do start_node "$port"; done
  if ! redis-cli -p "$FIRST_PORT" cluster info | grep -q "^cluster_known_nodes:$NODES"; then
    if [[ "$(redis-cli -p "$FIRST_PORT" cluster info | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')" == "1" ]]; then
      log "creating the cluster on $(seeds)"
      # shellcheck disable=SC2046
      redis-cli --cluster create $(seeds | tr , ' ') --cluster-replicas "$REPLICAS" --cluster-yes >"$DIR/create.log" 2>&1 \
        || die "cluster create failed (see $DIR/create.log)"
    fi
  fi
  for _ in $(seq 1 100); do cluster_ok && break; sleep 0.2; done
  cluster_ok || die "the cluster did not reach state ok (see $DIR/*/redis.log)"
  log "Redis Cluster ready: REDIS_CLUSTER_NODES=$(seeds)"
}

stop() {
  for port in "${PORTS[@]}"; do
    ping "$port" && redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  rm -rf "$DIR"
  log "stopped"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  nodes) seeds ;;
  *) echo "usage: $0 start|stop|nodes" >&2; exit 2 ;;
esac
