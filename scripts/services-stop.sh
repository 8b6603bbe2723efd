#!/usr/bin/env bash
# Stop the Kafka broker started by scripts/services-start.sh. Redis is left
# running unless --all is given. Idempotent.
#
# Environment (same as services-start.sh):
#   KAFKA_HOME_CACHE   cache dir (default: $HOME/.cache/realtime-gateway-kafka)
#   KAFKA_PORT         broker port (default: 9092)
#   KAFKA_CONTROLLER_PORT KRaft controller port (default: KAFKA_PORT + 1)
#   KAFKA_STOP_TIMEOUT seconds to wait before kill -9 (default: 30)
#   REDIS_PORT         Redis port (default: 6379)
set -euo pipefail

usage() { echo "usage: $0 [--all]   (--all also shuts Redis down)"; }
STOP_REDIS=0
for arg in "$@"; do
  case "$arg" in
    --all) STOP_REDIS=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

CACHE="${KAFKA_HOME_CACHE:-$HOME/.cache/realtime-gateway-kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
REDIS_PORT="${REDIS_PORT:-6379}"
PID_FILE="$CACHE/broker-$KAFKA_PORT/kafka.pid"

log() { printf '[services-stop] %s\n' "$*"; }

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

is_our_kafka() {
  kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka'
}

# Gone = no live process and both Kafka ports closed. (A JVM that was killed
# can linger as a zombie leader while its other threads still hold sockets.)
kafka_gone() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
  [[ -z "$state" || "$state" == "Z" ]] || return 1
  ! port_open "$KAFKA_PORT" && ! port_open "$KAFKA_CONTROLLER_PORT"
}

stop_kafka() {
  local pid=""
  [[ -f "$PID_FILE" ]] && pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  if [[ ! "$pid" =~ ^[0-9]+$ ]] || ! is_our_kafka "$pid"; then
    rm -f "$PID_FILE"
    log "Kafka (port $KAFKA_PORT) is not running from this script; nothing to stop"
    if port_open "$KAFKA_PORT"; then
      log "note: something else listens on 127.0.0.1:$KAFKA_PORT; left alone"
    fi
    return
  fi
  log "stopping Kafka (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
  until kafka_gone "$pid"; do
    if ((SECONDS >= deadline)); then
      log "Kafka did not exit within ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      local i
      for ((i = 0; i < 100; i++)); do
        kafka_gone "$pid" && break
        sleep 0.2
      done
      kafka_gone "$pid" || log "warning: pid $pid or its ports still linger after SIGKILL"
      break
    fi
    sleep 0.5
  done
  rm -f "$PID_FILE"
  log "Kafka stopped"
}

stop_redis() {
  if [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null || true)" != "PONG" ]]; then
    log "Redis (port $REDIS_PORT) is not running"
    return
  fi
  log "shutting Redis down (port $REDIS_PORT)"
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  local i
  for ((i = 0; i < 50; i++)); do
    [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null || true)" == "PONG" ]] || return 0
    sleep 0.2
  done
  log "warning: Redis still answers on port $REDIS_PORT"
}

stop_kafka
if ((STOP_REDIS)); then stop_redis; fi
exit 0
