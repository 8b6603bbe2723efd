/**
 * What the gateway needs of the Redis server's own settings, read with CONFIG GET at start
 * (RedisBroker) and said in a warning when it is not so (docs/operations.md, "Sizing Redis").
 */

/** `client-output-buffer-limit` for pub/sub connections, in bytes and seconds (0: no limit). */
export interface PubsubBufferLimit {
  hardBytes: number
  softBytes: number
  softSeconds: number
}

/**
 * What docs/operations.md recommends: a gateway draining a Kafka backlog publishes about
 * 12 MB/s of entries here (bench/README.md, "Session 13") and receives every one of them back
 * on its subscriber connection; Redis's default (32 MB hard, 8 MB for 60 s) cut that
 * connection whenever the gateway fell 3 s behind.
 */
export const RECOMMENDED_PUBSUB_LIMIT = 'pubsub 256mb 128mb 60'
const MIN_HARD_BYTES = 256 * 1024 * 1024
const MIN_SOFT_BYTES = 128 * 1024 * 1024

/**
 * The pub/sub class of a CONFIG GET client-output-buffer-limit answer ("normal 0 0 0 slave
 * … pubsub 33554432 8388608 60"), or undefined if it has none or is not in that form.
 */
export function pubsubBufferLimit (config: string): PubsubBufferLimit | undefined {
  const words = config.trim().split(/\s+/)
  const at = words.indexOf('pubsub')
  if (at < 0 || at + 3 >= words.length) return undefined
  const [hardBytes, softBytes, softSeconds] = words.slice(at + 1, at + 4).map(Number)
  if (![hardBytes, softBytes, softSeconds].every((n) => Number.isSafeInteger(n) && n >= 0)) return undefined
  return { hardBytes, softBytes, softSeconds }
}

/** Below the recommendation: a hard limit under 256 MB, or a soft one under 128 MB (0 is none). */
export function pubsubLimitTooLow (limit: PubsubBufferLimit): boolean {
  const hardTooLow = limit.hardBytes > 0 && limit.hardBytes < MIN_HARD_BYTES
  const softTooLow = limit.softBytes > 0 && limit.softSeconds > 0 && limit.softBytes < MIN_SOFT_BYTES
  return hardTooLow || softTooLow
}
