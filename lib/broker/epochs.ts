import { randomBytes } from 'node:crypto'

/**
 * Where a channel's epoch comes from, for every broker (docs/protocol.md, "Offsets and epochs").
 *
 * A channel nobody has published to keeps no state at all: a client that subscribes to
 * fresh names and leaves them must not make the server (or Redis) remember them. Yet the
 * position handed to such a subscriber, `{offset: 0, epoch}`, has to stay valid for the
 * channel's first publish, or a client resuming from it would be told `recovered: false`
 * for a channel that simply had no events yet.
 *
 * So the epoch of a channel with no stream is computed, not stored: the broker's epoch base
 * (random, made once per broker life: per process in memory, per Redis dataset in Redis)
 * followed by the number of the time bucket we are in. The first publish starts the
 * stream in exactly that epoch and stores it. Buckets are as long as a stream is kept
 * after its last publish (`streamRetentionSeconds`), so a stream that expired cannot be
 * followed by a new one in the same bucket, and epochs never repeat within a base: a
 * stream born in bucket b lives at least one bucket length, and its successor is born
 * after that. A lost dataset (Redis restarted without persistence) loses its base too,
 * so every epoch after the loss is new.
 */

/** Bytes of one epoch base. */
const BASE_BYTES = 9
/**
 * Random bytes drawn ahead, for this many bases: Redis reads and publishes pass a fresh base
 * each (used only when the dataset has none), and a randomBytes call each was 3 % of a
 * gateway's time in a reconnect storm.
 */
const POOLED_BASES = 256
let pool = Buffer.alloc(0)
let used = 0

/** A new epoch base: base64url (no `,` or `;`, which the SSE cursor uses), 12 characters. */
export function newEpochBase (): string {
  if (used + BASE_BYTES > pool.length) {
    pool = randomBytes(BASE_BYTES * POOLED_BASES)
    used = 0
  }
  const base = pool.toString('base64url', used, used + BASE_BYTES)
  used += BASE_BYTES
  return base
}

/** The epoch of a channel without a stream, at `nowMs`. */
export function bucketEpoch (base: string, nowMs: number, bucketSeconds: number): string {
  return base + Math.floor(nowMs / 1000 / bucketSeconds).toString(36)
}

/**
 * How long a stream (offset and epoch) outlives its last publish: twice the history TTL,
 * and at least `floorSeconds`, so a quiet channel keeps counting where it was and a client
 * that saw its last event is told `recovered: true` rather than sent to reload.
 */
export const streamRetentionSeconds = (historyTtlSeconds: number, floorSeconds: number): number =>
  Math.max(2 * historyTtlSeconds, floorSeconds)

/** Redis keeps a stream a day after its last publish (or twice the history TTL). */
export const REDIS_STREAM_FLOOR_SECONDS = 86_400
/** The memory broker keeps one an hour (or twice the history TTL): its memory is the process's. */
export const MEMORY_STREAM_FLOOR_SECONDS = 3600
