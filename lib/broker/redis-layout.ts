import { randomBytes } from 'node:crypto'
import type { PublishedEvent } from '../core/event.js'

/**
 * How the Redis broker lays a channel out, under the key prefix P (REDIS_KEY_PREFIX):
 *
 * | key              | type    | holds                                                        |
 * | ---------------- | ------- | ------------------------------------------------------------ |
 * | `P meta:<ch>`    | hash    | `epoch`, `offset`: where the channel's stream stands          |
 * | `P hist:<ch>`    | list    | the last HISTORY_SIZE entries, oldest first                  |
 * | `P ev:<ch>`      | pub/sub | every entry, as it is published                              |
 * | `P node:<id>`, `P nodes` | string, set | cluster stats (lib/ops/node-registry.ts)         |
 *
 * An entry is `<epoch>,<offset>,<ms since 1970>,<JSON {type, payload}>`: the same string
 * goes into the history and onto pub/sub, so readers decode one format.
 *
 * Lifetimes. The history expires HISTORY_TTL_SECONDS after the channel's last publish
 * (the whole list: EXPIRE is refreshed by every publish), which is exactly the contract
 * of lib/broker/broker.ts. The meta hash lives much longer (`metaTtlSeconds`): a quiet channel
 * keeps counting from where it was, so a client that saw the last event before the
 * history expired is still told `recovered: true` with nothing to replay, instead of
 * being sent to reload by a needless epoch change. A meta hash only *read* (subscribe to
 * a channel nobody published to) lives HISTORY_TTL_SECONDS, so clients naming random
 * channels cannot fill Redis with day-long keys.
 *
 * Epoch rule: a channel gets a fresh random epoch whenever its meta hash is missing —
 * first use, expiry after a long silence, eviction, FLUSH, or a Redis restarted without
 * persistence. Creating an epoch also deletes any history left from the old one, so
 * offsets of one epoch are never mixed with another's.
 */
export interface ChannelKeys {
  meta: string
  history: string
  pubsub: string
}

export function channelKeys (prefix: string, channel: string): ChannelKeys {
  return { meta: `${prefix}meta:${channel}`, history: `${prefix}hist:${channel}`, pubsub: `${prefix}ev:${channel}` }
}

/** The pub/sub channel name prefix; what follows it is the gateway channel. */
export const pubsubPrefix = (prefix: string): string => `${prefix}ev:`

/** A glob matching `text` literally (for SCAN MATCH / PUBSUB CHANNELS on a prefix). */
export const globLiteral = (text: string): string => text.replace(/[*?[\]\\]/g, '\\$&')

/** How long the meta hash outlives the last publish: a day, or twice the history TTL. */
export const metaTtlSeconds = (historyTtlSeconds: number): number => Math.max(2 * historyTtlSeconds, 86_400)

/**
 * A new epoch: random base64url, so it never holds `,` or `;` (the SSE cursor and the
 * entry format use them as separators).
 */
export const newEpoch = (): string => randomBytes(9).toString('base64url')

/**
 * Publish, atomically: take the next offset (making an epoch if the channel has none),
 * append to the bounded history, refresh both TTLs, and PUBLISH the entry. Because the
 * PUBLISH happens inside the script, every subscriber of every instance sees a channel's
 * entries in offset order. The time comes from Redis, one clock for all instances.
 *
 * KEYS: meta, history. ARGV: epoch-if-none, body, history size, history TTL, meta TTL,
 * pub/sub channel. Returns {epoch, offset, ms}.
 */
export const PUBLISH_SCRIPT = `
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
local now = redis.call('TIME')
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
 * Read a channel's position and, when asked, the entries after `since` (only the tail
 * that could answer it: the last `offset - since` entries). Makes an epoch if the
 * channel has none, so the position a subscriber is given stays valid for the first
 * publish.
 *
 * KEYS: meta, history. ARGV: epoch-if-none, TTL of a meta made here, since offset
 * (-1: position only), since epoch ('' = the current one). Returns {epoch, offset, entries…}.
 */
export const READ_SCRIPT = `
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
local epoch = meta[1]
local offset = 0
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
else
  offset = tonumber(meta[2]) or 0
end
local reply = {epoch, offset}
local since = tonumber(ARGV[3])
if since >= 0 and since < offset and (ARGV[4] == '' or ARGV[4] == epoch) then
  local entries = redis.call('LRANGE', KEYS[2], since - offset, -1)
  for i = 1, #entries do reply[i + 2] = entries[i] end
end
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
