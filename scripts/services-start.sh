#!/usr/bin/env bash
# Start the local services the gateway's integration tests need: Redis and a
# real single-node Apache Kafka broker (KRaft mode: no ZooKeeper, no Docker).
#
# Kafka runs from the official org.apache.kafka jars, fetched from Maven
# Central with Maven (scripts/kafka/pom.xml) into a cache outside the repo.
# Idempotent: whatever is already up is left alone.
#
# Environment:
#   KAFKA_HOME_CACHE       cache dir (default: $HOME/.cache/realtime-gateway-kafka)
#   KAFKA_PORT             broker port (default: 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default: KAFKA_PORT + 1)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker (default: 90)
#   KAFKA_HEAP_OPTS        JVM heap flags (default: -Xms128m -Xmx512m)
#   REDIS_PORT             Redis port (default: 6379)
#   REDIS_CLUSTER          0: do not start the local Redis Cluster (scripts/redis-cluster.sh)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
KAFKA_TEMPLATES="$SCRIPT_DIR/kafka"

CACHE="${KAFKA_HOME_CACHE:-$HOME/.cache/realtime-gateway-kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
REDIS_PORT="${REDIS_PORT:-6379}"

LIB_DIR="$CACHE/lib"
INSTANCE_DIR="$CACHE/broker-$KAFKA_PORT"
DATA_DIR="$INSTANCE_DIR/data"
PROPS="$INSTANCE_DIR/server.properties"
LOG4J="$INSTANCE_DIR/log4j.properties"
KAFKA_LOG="$INSTANCE_DIR/kafka.log"
PID_FILE="$INSTANCE_DIR/kafka.pid"
CLUSTER_ID_FILE="$INSTANCE_DIR/cluster-id"
REDIS_LOG="$CACHE/redis-$REDIS_PORT.log"

log() { printf '[services-start] %s\n' "$*"; }
die() { printf '[services-start] ERROR: %s\n' "$*" >&2; exit 1; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Pid of the Kafka this script started, if it is still alive.
kafka_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse: it must be our broker.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
  echo "$pid"
}

mkdir -p "$CACHE"

# ---------------------------------------------------------------- Redis ----
# Redis's default pub/sub output buffer limit (32 MB) cuts a gateway's subscriber that falls
# behind while it drains a Kafka backlog (docs/operations.md, "Sizing Redis").
REDIS_PUBSUB_LIMIT="pubsub 256mb 128mb 60"
start_redis() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    die "redis-server/redis-cli not found (apt-get install -y redis-server)"
  fi
  if [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null || true)" == "PONG" ]]; then
    local logfile
    logfile="$(redis-cli -p "$REDIS_PORT" config get logfile 2>/dev/null | sed -n 2p || true)"
    REDIS_LOG="${logfile:-<stdout of the process that started it>}"
    log "Redis already running on 127.0.0.1:$REDIS_PORT"
    # As docs/operations.md recommends, also for a Redis started otherwise (CI's, a package's).
    redis-cli -p "$REDIS_PORT" config set client-output-buffer-limit "$REDIS_PUBSUB_LIMIT" >/dev/null 2>&1 || true
    return
  fi
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --port "$REDIS_PORT" --bind '127.0.0.1 -::1' \
    --save "" --appendonly no --dir "$CACHE" --logfile "$REDIS_LOG" \
    --client-output-buffer-limit "$REDIS_PUBSUB_LIMIT" >/dev/null
  local i
  for ((i = 0; i < 50; i++)); do
    [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null || true)" == "PONG" ]] && return
    sleep 0.2
  done
  tail -n 20 "$REDIS_LOG" >&2 2>/dev/null || true
  die "Redis did not answer PING on port $REDIS_PORT within 10 s (log: $REDIS_LOG)"
}

# ---------------------------------------------------------------- Kafka ----
# Fetch the broker jars unless the cache matches the current pom.
fetch_kafka_jars() {
  local want have tmp
  want="$(sha256sum "$KAFKA_TEMPLATES/pom.xml" | cut -d' ' -f1)"
  have="$(cat "$LIB_DIR/.pom.sha256" 2>/dev/null || true)"
  [[ "$want" == "$have" ]] && return
  command -v mvn >/dev/null || die "mvn not found (apt-get install -y maven)"
  command -v java >/dev/null || die "java not found (apt-get install -y openjdk-17-jdk-headless)"
  log "fetching Kafka jars from Maven Central into $LIB_DIR (first run only)"
  tmp="$CACHE/lib.tmp.$$"
  rm -rf "$tmp"
  # Quiet Maven still prints stray colour codes; show its output only on failure.
  if ! mvn -q -B -Dstyle.color=never -f "$KAFKA_TEMPLATES/pom.xml" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
      >"$CACHE/mvn-fetch.log" 2>&1; then
    cat "$CACHE/mvn-fetch.log" >&2
    rm -rf "$tmp"
    die "Maven could not fetch the Kafka jars (output above, also in $CACHE/mvn-fetch.log)"
  fi
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "no kafka_2.13 jar in $tmp"; }
  echo "$want" >"$tmp/.pom.sha256"
  rm -rf "$LIB_DIR"
  mv "$tmp" "$LIB_DIR"
}

write_kafka_config() {
  mkdir -p "$DATA_DIR"
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
      -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
      -e "s|@DATA_DIR@|$DATA_DIR|g" \
      "$KAFKA_TEMPLATES/server.properties" >"$PROPS"
  # Everything goes to stdout, which is redirected to $KAFKA_LOG.
  cat >"$LOG4J" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel$=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN
log4j.logger.org.apache.kafka.common.config.AbstractConfig=WARN
EOF
}

# Small, short-lived JVM for the admin tools.
kafka_tool() {
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j.configuration="file:$LOG4J" -cp "$LIB_DIR/*" "$@"
}

format_storage_once() {
  [[ -f "$DATA_DIR/meta.properties" ]] && return
  local cid
  cid="$(cat "$CLUSTER_ID_FILE" 2>/dev/null || true)"
  if [[ -z "$cid" ]]; then
    cid="$(kafka_tool kafka.tools.StorageTool random-uuid | tail -n 1)"
    [[ -n "$cid" ]] || die "could not generate a Kafka cluster id"
    echo "$cid" >"$CLUSTER_ID_FILE"
  fi
  log "formatting KRaft storage in $DATA_DIR (cluster id $cid)"
  kafka_tool kafka.tools.StorageTool format -t "$cid" -c "$PROPS" --ignore-formatted >/dev/null \
    || die "kafka-storage format failed"
}

launch_kafka() {
  [[ -f "$KAFKA_LOG" ]] && mv -f "$KAFKA_LOG" "$KAFKA_LOG.prev"
  local jar version
  jar="$(echo "$LIB_DIR"/kafka_2.13-*.jar)"
  version="${jar##*/kafka_2.13-}"
  log "starting Kafka ${version%.jar} on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT)"
  # setsid + nohup: the broker outlives this shell and its process group.
  # shellcheck disable=SC2086
  nohup setsid java $KAFKA_HEAP_OPTS \
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$LOG4J" \
    -cp "$LIB_DIR/*" kafka.Kafka "$PROPS" >"$KAFKA_LOG" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
}

# True once the broker answers a metadata request (not just an open port).
kafka_ready() {
  port_open "$KAFKA_PORT" || return 1
  if command -v node >/dev/null && [[ -d "$REPO_DIR/node_modules/kafkajs" ]]; then
    (cd "$REPO_DIR" && timeout 15 node --input-type=module -e "
      import kafkajs from 'kafkajs';
      const { Kafka, logLevel } = kafkajs;
      const kafka = new Kafka({ clientId: 'services-start', brokers: ['127.0.0.1:$KAFKA_PORT'],
        logLevel: logLevel.NOTHING, connectionTimeout: 2000, requestTimeout: 5000, retry: { retries: 0 } });
      const admin = kafka.admin();
      try { await admin.connect(); await admin.listTopics(); await admin.disconnect(); process.exit(0); }
      catch { process.exit(1); }
    ") >/dev/null 2>&1
  elif [[ -f "$LIB_DIR/.pom.sha256" ]]; then
    kafka_tool kafka.admin.BrokerApiVersionsCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" >/dev/null 2>&1
  fi # neither kafkajs nor the jars: an open port is all we can check
}

# True while $1 is a live (non-zombie) process.
proc_alive() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
  [[ -n "$state" && "$state" != "Z" ]]
}

launch_fresh() {
  if port_open "$KAFKA_CONTROLLER_PORT"; then
    die "the KRaft controller port 127.0.0.1:$KAFKA_CONTROLLER_PORT is already in use (set KAFKA_CONTROLLER_PORT)"
  fi
  fetch_kafka_jars
  write_kafka_config
  format_storage_once
  launch_kafka
}

fail_with_log() {
  echo "----- last 40 lines of $KAFKA_LOG -----" >&2
  tail -n 40 "$KAFKA_LOG" >&2 2>/dev/null || true
  die "$1"
}

start_kafka() {
  mkdir -p "$INSTANCE_DIR"
  local pid=""
  pid="$(kafka_pid || true)"
  if [[ -n "$pid" ]]; then
    log "Kafka already started by this script (pid $pid)"
  elif port_open "$KAFKA_PORT"; then
    log "something already listens on 127.0.0.1:$KAFKA_PORT; not starting another broker"
  else
    launch_fresh
    pid="$(cat "$PID_FILE")"
  fi

  local start=$SECONDS
  [[ -f "$LOG4J" ]] || write_kafka_config # needed by the Java readiness fallback
  until kafka_ready; do
    if [[ -n "$pid" ]] && ! proc_alive "$pid"; then
      rm -f "$PID_FILE"
      fail_with_log "Kafka exited during startup (log: $KAFKA_LOG)"
    fi
    if [[ -z "$pid" ]] && ! port_open "$KAFKA_PORT"; then
      # The foreign listener went away (e.g. a broker still shutting down).
      log "the process on 127.0.0.1:$KAFKA_PORT went away; starting our own broker"
      sleep 1
      launch_fresh
      pid="$(cat "$PID_FILE")"
      start=$SECONDS
    fi
    if ((SECONDS - start >= KAFKA_START_TIMEOUT)); then
      if [[ -n "$pid" ]]; then
        fail_with_log "Kafka did not answer on 127.0.0.1:$KAFKA_PORT within ${KAFKA_START_TIMEOUT}s (still running as pid $pid; stop it with scripts/services-stop.sh)"
      fi
      die "the process listening on 127.0.0.1:$KAFKA_PORT (not started by this script) does not answer as a Kafka broker"
    fi
    sleep 1
  done
  log "Kafka ready on 127.0.0.1:$KAFKA_PORT"
}

start_redis
start_kafka
# The Redis Cluster tests' 6 nodes (scripts/redis-cluster.sh); REDIS_CLUSTER=0 leaves it out.
if [[ "${REDIS_CLUSTER:-1}" != "0" ]]; then bash "$SCRIPT_DIR/redis-cluster.sh" start; fi

log "Redis log: $REDIS_LOG"
log "Kafka log: $KAFKA_LOG (data: $DATA_DIR, pid file: $PID_FILE)"
