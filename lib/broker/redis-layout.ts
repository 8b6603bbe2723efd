import { randomBytes } from 'node:crypto'
import type { PublishedEvent } from '../core/event.js'

/**
 * How the Redis broker lays a channel out, under the key prefix P (REDIS_KEY_PREFIX), in the
 * database D of REDIS_URL:
 *
 * | key / channel        | type    | holds                                                   |
 * | -------------------- | ------- | ------------------------------------------------------- |
 * | `P meta:<ch>`        | hash    | `epoch`, `offset`: where the channel's stream stands     |
 * | `P hist:<ch>`        | list    | the last HISTORY_SIZE entries, oldest first             |
 * | `P epoch-base`       | string  | the epoch base of this dataset (lib/broker/epochs.ts)   |
 * | `P presence:<ch>`    | hash    | each instance's presence share (lib/broker/redis-presence.ts) |
 * | `P presence-nodes`   | zset    | instances' presence heartbeats                          |
 * | `P revocations`      | hash    | revoked users and token ids (lib/broker/redis-control.ts) |
 * | `P db<D>:control`    | pub/sub | disconnects and revocations, to every instance          |
 * | `P db<D>:ev:<ch>`    | pub/sub | every entry, as it is published                         |
 * | `P node:<id>`, `P nodes` | string, set | cluster stats (lib/ops/node-registry.ts)    |
 *
 * Pub/sub ignores the database number (every client of a Redis server shares one pub/sub
 * namespace), so the pub/sub names carry D: two deployments that differ only by database
 * never see each other's events.
 *
 * An entry is `<epoch>,<offset>,<ms since 1970>,<JSON {type, payload}>`: the same string
 * goes into the history and onto pub/sub, so readers decode one format.
 *
 * Lifetimes. A channel has keys only once it is published to: reading a position never
 * writes one, so clients naming random channels cost Redis nothing. The history expires
 * HISTORY_TTL_SECONDS after the channel's last publish (EXPIRE is refreshed by every
 * publish), which is exactly the contract of lib/broker/broker.ts. The meta hash lives
 * `retentionSeconds` (a day, or twice the history TTL): a quiet channel keeps counting
 * from where it was, so a client that saw the last event before the history expired is
 * still told `recovered: true` with nothing to replay.
 *
 * Epochs. A channel without a meta hash is in the computed epoch of lib/broker/epochs.ts:
 * the dataset's epoch base (made on first use) and the number of the current bucket of
 * `retentionSeconds`, by Redis's clock. Its first publish stores that epoch. The base goes
 * when the dataset goes (a Redis restarted without persistence, FLUSH), so every epoch
 * after such a loss is new. An evicted meta hash (maxmemory with an evicting policy) would
 * restart its channel in the same epoch: run Redis with `maxmemory-policy noeviction`
 * (docs/operations.md); the broker warns at start-up when it sees another policy.
 */
export class RedisLayout {
  readonly baseKey: string
  /** What every pub/sub name of this deployment starts with; the gateway channel follows. */
  readonly pubsubPrefix: string

  /** The pub/sub channel of disconnects and revocations (lib/broker/redis-control.ts). */
  readonly controlChannel: string
  readonly revocationsKey: string

  constructor (readonly keyPrefix: string, readonly db = 0) {
    this.baseKey = `${keyPrefix}epoch-base`
    this.pubsubPrefix = `${keyPrefix}db${db}:ev:`
    this.controlChannel = `${keyPrefix}db${db}:control`
    this.revocationsKey = `${keyPrefix}revocations`
  }

  /** Each instance's presence share of the channel (lib/broker/redis-presence.ts). */
  sharesKey (channel: string): string {
    return `${this.keyPrefix}presence:${channel}`
  }

  /** Instance heartbeats for presence. */
  get nodesKey (): string {
    return `${this.keyPrefix}presence-nodes`
  }

  keys (channel: string): ChannelKeys {
    return { meta: `${this.keyPrefix}meta:${channel}`, history: `${this.keyPrefix}hist:${channel}`, pubsub: this.pubsubName(channel) }
  }

  pubsubName (channel: string): string {
    return this.pubsubPrefix + channel
  }

  /** The gateway channel of a pub/sub name of this deployment, or undefined. */
  channelOf (pubsubName: string): string | undefined {
    return pubsubName.startsWith(this.pubsubPrefix) ? pubsubName.slice(this.pubsubPrefix.length) : undefined
  }
}

export interface ChannelKeys {
  meta: string
  history: string
  pubsub: string
}

/** The database number a redis:// URL selects (`/3`, or `?db=3`); 0 when none. */
export function databaseOf (url: string): number {
  try {
    const parsed = new URL(url)
    const fromPath = parsed.pathname.replace(/^\//, '')
    const db = Number(fromPath !== '' ? fromPath : (parsed.searchParams.get('db') ?? '0'))
    return Number.isSafeInteger(db) && db >= 0 ? db : 0
  } catch {
    return 0
  }
}

/** A glob matching `text` literally (for SCAN MATCH / PUBSUB CHANNELS on a prefix). */
export const globLiteral = (text: string): string => text.replace(/[*?[\]\\]/g, '\\$&')

/** A random name for connections (CLIENT LIST) when none is given. */
export const randomName = (): string => randomBytes(6).toString('base64url')

/**
 * The epoch of a channel without a meta hash (lib/broker/epochs.ts, in Lua): the base,
 * made from ARGV `newBase` if the dataset has none, then the bucket number in base 36.
 */
const EPOCH_OF_EMPTY_CHANNEL = `
local function emptyEpoch (baseKey, newBase, bucketSeconds, nowSeconds)
  local base = redis.call('GET', baseKey)
  if not base then
    base = newBase
    redis.call('SET', baseKey, base)
  end
  local n = math.floor(nowSeconds / bucketSeconds)
  local digits = '0123456789abcdefghijklmnopqrstuvwxyz'
  local text = ''
  repeat
    local d = n % 36
    text = string.sub(digits, d + 1, d + 1) .. text
    n = math.floor(n / 36)
  until n == 0
  return base .. text
end
`

/**
 * Publish, atomically: take the next offset (starting the stream in its computed epoch if
 * the channel has none), append to the bounded history, refresh both TTLs, and PUBLISH the
 * entry. Because the PUBLISH happens inside the script, every subscriber of every instance
 * sees a channel's entries in offset order. The time comes from Redis, one clock for all
 * instances.
 *
 * KEYS: meta, history, epoch base. ARGV: new base (if the dataset has none), body, history
 * size, history TTL, retention (meta TTL and epoch bucket), pub/sub channel.
 * Returns {epoch, offset, ms}.
 */
export const PUBLISH_SCRIPT = EPOCH_OF_EMPTY_CHANNEL + `
local now = redis.call('TIME')
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = emptyEpoch(KEYS[3], ARGV[1], tonumber(ARGV[5]), tonumber(now[1]))
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
local ms = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
local entry = epoch .. ',' .. offset .. ',' .. ms .. ',' .. ARGV[2]
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('RPUSH', KEYS[2], entry)
  redis.call('LTRIM', KEYS[2], -size, -1)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
redis.call('PUBLISH', ARGV[6], entry)
return {epoch, offset, ms}
`

/**
 * Many publishes in one script run: PUBLISH_SCRIPT itself, as a function whose KEYS and
 * ARGV are one event's, run for each event in the order given. So the batch follows the
 * one-event rules exactly (and whatever they become), in one round trip, and nothing runs
 * in between: all of the events are taken or none.
 *
 * What every event shares is sent once (lib/broker/redis-publish-batch.ts builds the
 * call). KEYS: epoch base, then meta and history of each event, one pair after another.
 * ARGV: new base (if the dataset has none), then each event's body, history size, history
 * TTL, retention and pub/sub name. Returns each event's reply. (On a Redis Cluster every
 * key of one call must share a slot: group the events by slot.)
 */
export const PUBLISH_BATCH_SCRIPT = `
local function publish_one (KEYS, ARGV)
${PUBLISH_SCRIPT}
end
local replies = {}
for e = 0, (#KEYS - 1) / 2 - 1 do
  local a = 2 + 5 * e
  replies[e + 1] = publish_one({KEYS[2 + 2 * e], KEYS[3 + 2 * e], KEYS[1]},
    {ARGV[1], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]})
end
return replies
`

/**
 * Read a channel's position and, when asked, the entries after `since` (only the tail
 * that could answer it: the last `offset - since` entries), or the last `last` entries.
 * Writes nothing for the channel: one without a meta hash is at offset 0 of its computed
 * epoch.
 *
 * KEYS: meta, history, epoch base. ARGV: new base (if the dataset has none), retention,
 * since offset (-1: none), since epoch ('' = the current one), last (0: none).
 * Returns {epoch, offset, entries…}.
 */
export const READ_SCRIPT = EPOCH_OF_EMPTY_CHANNEL + `
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
local epoch = meta[1]
local offset = 0
if not epoch then
  epoch = emptyEpoch(KEYS[3], ARGV[1], tonumber(ARGV[2]), tonumber(redis.call('TIME')[1]))
else
  offset = tonumber(meta[2]) or 0
end
local reply = {epoch, offset}
local since = tonumber(ARGV[3])
local last = tonumber(ARGV[5])
local entries = {}
if since >= 0 and since < offset and (ARGV[4] == '' or ARGV[4] == epoch) then
  entries = redis.call('LRANGE', KEYS[2], since - offset, -1)
elseif last > 0 and offset > 0 then
  entries = redis.call('LRANGE', KEYS[2], -last, -1)
end
for i = 1, #entries do reply[i + 2] = entries[i] end
return reply
`

/** The entry body: what of the event is not its place in the stream. */
export const entryBody = (type: string, payload: Record<string, unknown>): string => JSON.stringify({ type, payload })

/** Decodes an entry of `channel`; throws on anything that is not one. */
export function decodeEntry (channel: string, entry: string): PublishedEvent {
  const a = entry.indexOf(',')
  const b = entry.indexOf(',', a + 1)
  const c = entry.indexOf(',', b + 1)
  if (a <= 0 || b < 0 || c < 0) throw new Error('not a broker entry')
  const offset = Number(entry.slice(a + 1, b))
  const ms = Number(entry.slice(b + 1, c))
  const body = JSON.parse(entry.slice(c + 1)) as { type?: unknown, payload?: unknown }
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(ms) || typeof body.type !== 'string' ||
    typeof body.payload !== 'object' || body.payload === null) {
    throw new Error('not a broker entry')
  }
  return {
    channel,
    type: body.type,
    payload: body.payload as Record<string, unknown>,
    offset,
    epoch: entry.slice(0, a),
    ts: new Date(ms).toISOString()
  }
}
