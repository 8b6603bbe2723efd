import { randomBytes } from 'node:crypto'
import { jsonString, type PublishedEvent } from '../core/event.js'
import { slotOf, slotTag } from './redis-slots.js'

/**
 * How the Redis broker lays a channel out, under the key prefix P (REDIS_KEY_PREFIX), in the
 * database D of REDIS_URL:
 *
 * | key / channel        | type    | holds                                                   |
 * | -------------------- | ------- | ------------------------------------------------------- |
 * | `P meta:<ch>`        | hash    | `epoch`, `offset`: where the channel's stream stands     |
 * | `P hist:<ch>`        | list    | the last HISTORY_SIZE entries, oldest first             |
 * | `P epoch-gen`        | hash    | `base`, `runid`: the epoch base of this Redis run (lib/broker/epochs.ts) |
 * | `P presence:<ch>`    | hash    | each instance's presence share (lib/broker/redis-presence.ts) |
 * | `P presence-nodes`   | zset    | instances' presence heartbeats                          |
 * | `P revocations`      | hash    | revoked users and token ids (lib/broker/redis-control.ts) |
 * | `P idem:<ch>:<key>`  | string  | a deduplicated draft's place, for IDEMPOTENCY_TTL_SECONDS |
 * | `P idem-claim:<scope>` | string | the fingerprint of the request that claimed an Idempotency-Key |
 * | `P origin:<topic>:<p>` | string | a Kafka partition's high-water mark `offset,index`, for IDEMPOTENCY_TTL_SECONDS |
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
 * the dataset's epoch base and the number of the current bucket of `retentionSeconds`, by
 * Redis's clock. Its first publish stores that epoch, and the base it was made under.
 *
 * The base belongs to one run of one Redis server: `P epoch-gen` holds it with that
 * server's `run_id`, and every script compares the `run_id` of the server it runs on (INFO
 * server, read once per server process): a different one means a restart or a failover to a replica, either of which may
 * have lost the last writes, so a new base is made, and a channel whose meta hash names
 * another base starts a new stream (new epoch, offsets from 1) at its next publish, and
 * reads as empty until then. So no offset is ever handed out twice in one epoch, whatever
 * Redis lost: live subscribers get `system:reset`, resuming clients `recovered: false`
 * (docs/operations.md, "Redis failover"). An evicted meta hash (maxmemory with an evicting
 * policy) would restart its channel in the same epoch: run Redis with
 * `maxmemory-policy noeviction`; the broker warns at start-up when it sees another policy.
 */
export class RedisLayout {
  /** The epoch base of the dataset (one Redis); on a cluster each slot has its own (baseKeyOf). */
  readonly baseKey: string
  /** What every pub/sub name of this deployment starts with; the gateway channel follows. */
  readonly pubsubPrefix: string

  /** The pub/sub channel of disconnects and revocations (lib/broker/redis-control.ts). */
  readonly controlChannel: string
  readonly revocationsKey: string
  /** What the cluster stats keys start with (lib/ops/node-registry.ts): one slot on a cluster. */
  readonly registryPrefix: string

  /**
   * `clustered`: the layout for a Redis Cluster (docs/operations.md, "Redis Cluster"). Every
   * key of a channel carries the channel as its hash tag, `P{<ch>}:meta`, `P{<ch>}:hist`,
   * `P{<ch>}:idem:<key>`, so one script can touch them all (a Kafka partition's mark is kept
   * per slot, `P{<tag>}:origin:<source>`, beside the slot's epoch base); its pub/sub name is a shard channel in the same slot,
   * `P db0:ev:{<ch>}`; and the epoch base is kept per slot, `P{<tag>}:epoch-gen` with a tag
   * of that slot (lib/broker/redis-slots.ts), since a script may touch only its own slot and
   * each shard has its own run (and its own failovers).
   */
  constructor (readonly keyPrefix: string, readonly db = 0, readonly clustered = false) {
    this.baseKey = `${keyPrefix}epoch-gen`
    this.pubsubPrefix = `${keyPrefix}db${db}:ev:`
    this.controlChannel = `${keyPrefix}db${db}:control`
    this.revocationsKey = `${keyPrefix}revocations`
    this.registryPrefix = clustered ? `${keyPrefix}{registry}:` : keyPrefix
  }

  /** The epoch base key a channel's scripts use: the dataset's, or its slot's on a cluster. */
  baseKeyOf (channel: string): string {
    return this.clustered ? `${this.keyPrefix}{${slotTag(slotOf(channel))}}:epoch-gen` : this.baseKey
  }

  /** The cluster slot of a channel's keys (0 on one Redis, where slots do not matter). */
  slotOfChannel (channel: string): number {
    return this.clustered ? slotOf(channel) : 0
  }

  /** Each instance's presence share of the channel (lib/broker/redis-presence.ts). */
  sharesKey (channel: string): string {
    return `${this.keyPrefix}presence:${channel}`
  }

  /** Instance heartbeats for presence. */
  get nodesKey (): string {
    return `${this.keyPrefix}presence-nodes`
  }

  /** Where a draft's dedupe key is remembered (with the channel's keys, for a cluster's sake). */
  dedupeKey (channel: string, dedupe: string): string {
    return this.clustered ? `${this.keyPrefix}{${channel}}:idem:${dedupe}` : `${this.keyPrefix}idem:${channel}:${dedupe}`
  }

  /**
   * An ordered source's high-water mark (EventDraft.origin): `offset,index` of the last draft
   * published from it; per slot on a cluster, where a script may touch only its slot (a
   * source's drafts reach each slot in the source's order, and each slot's part of a batch
   * is all or nothing, so a mark per slot skips exactly what a mark per source would).
   */
  originKey (source: string, channel: string): string {
    return this.clustered ? `${this.keyPrefix}{${slotTag(slotOf(channel))}}:origin:${source}` : `${this.keyPrefix}origin:${source}`
  }

  /** Where an idempotency scope's claim is kept. */
  claimKey (scope: string): string {
    return `${this.keyPrefix}idem-claim:${scope}`
  }

  keys (channel: string): ChannelKeys {
    if (this.clustered) {
      const tagged = `${this.keyPrefix}{${channel}}:`
      return { meta: `${tagged}meta`, history: `${tagged}hist`, pubsub: this.pubsubName(channel) }
    }
    return { meta: `${this.keyPrefix}meta:${channel}`, history: `${this.keyPrefix}hist:${channel}`, pubsub: this.pubsubName(channel) }
  }

  pubsubName (channel: string): string {
    return this.clustered ? `${this.pubsubPrefix}{${channel}}` : this.pubsubPrefix + channel
  }

  /** The gateway channel of a pub/sub name of this deployment, or undefined. */
  channelOf (pubsubName: string): string | undefined {
    if (!pubsubName.startsWith(this.pubsubPrefix)) return undefined
    return this.clustered ? pubsubName.slice(this.pubsubPrefix.length + 1, -1) : pubsubName.slice(this.pubsubPrefix.length)
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
 * In Lua, the top of the Function library (lib/broker/redis-functions.ts): `currentBase` is
 * the epoch base of the Redis run the function runs on (a new one, from ARGV `newBase`, when
 * the stored one was made under another `run_id`: a restart or a failover); the run_id is
 * read once per library load in this server process (a library-level local), which is the
 * run_id's own lifetime. `bucketEpoch` is the epoch of a channel without a stream: the base,
 * then the bucket number in base 36 (lib/broker/epochs.ts).
 */
export const EPOCH_OF_EMPTY_CHANNEL = `
local runid = nil
local function currentBase (baseKey, newBase)
  runid = runid or string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
  local stored = redis.call('HMGET', baseKey, 'base', 'runid')
  if stored[1] and stored[2] == runid then return stored[1] end
  redis.call('HSET', baseKey, 'base', newBase, 'runid', runid)
  return newBase
end
local function bucketEpoch (base, bucketSeconds, nowSeconds)
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
 * Publish a batch of events (one or many, in the order given), atomically: each takes the
 * next offset of its channel (starting the stream in its computed epoch if the channel has
 * none), joins the bounded history, and is PUBLISHed; both TTLs are refreshed. Because the
 * PUBLISH happens inside the script, every subscriber of every instance sees a channel's
 * entries in offset order; all of the events are taken or none. The time comes from Redis,
 * one clock for all instances (one reading a run: a run's events share their ms).
 *
 * With a dedupe key (lib/core/event.ts EventDraft.dedupe) the check and the publish are one
 * step: a key seen within its TTL answers the first event's place, `replayed` 1, and
 * publishes nothing; a new one is remembered with the place it got. A crash can therefore
 * never leave an event published without its key, nor a key without its event.
 *
 * With an origin (EventDraft.origin: a Kafka partition, the message's offset and the
 * draft's index) the source's high-water mark is checked and moved in the same step: a
 * draft at or below it was published already and is skipped (`replayed` 2, no place). A
 * mark at or past where the source's log ends now (DraftOrigin.logEnd) was left by a log
 * that is gone (a topic created again) or by another reader that went past this batch:
 * the run answers `{'moved', m, text, …}` and publishes nothing, unless the caller passed
 * the mark's text as confirmed gone (DraftOrigin.movedMarks): then it is set aside. Marks
 * are read before anything else, so a moved one leaves no trace.
 *
 * Cost (issue 18: at ~10 commands an event, Redis bounded the Kafka ingest): what is per
 * channel (its keys, history size and TTLs, pub/sub name; reading its meta hash, pushing
 * and trimming its history, refreshing both TTLs) is sent and done once per channel and
 * run, and a source's mark once per run, whatever the number of events; per event remain
 * its body, its PUBLISH and, with a dedupe key, that key's GET and SET. The state of each
 * channel touched is kept in Lua tables during the run and written at the end.
 *
 * With a claim (an HTTP caller's Idempotency-Key, lib/broker/broker.ts IdempotencyClaim),
 * the claim key is set to the request's fingerprint first, unless it holds one already: a
 * different one answers `{'conflict'}` and nothing is published. So a key is never taken
 * without its request's events, as it could be with the claim in a call of its own.
 *
 * The call (lib/broker/redis-publish-batch.ts builds it). KEYS: epoch base; each channel's
 * meta and history (channel c at 2c and 2c+1); the origin marks; the dedupe keys; the
 * claim key, last, if any. ARGV: new base (if the dataset has none), idempotency TTL, the
 * number of channels C and of marks M, the claim's fingerprint ('' for none); each
 * channel's history size, history TTL, retention (meta TTL and epoch bucket) and pub/sub
 * name (channel c from 6 + 4(c-1)); each mark's log end (mark m at 4 + 4C + 2m; -1: not
 * known) and the text it may read to be set aside (5 + 4C + 2m; '': none); then six per
 * event: its channel c, body, dedupe key d
 * (0: none), mark m (0: none), origin offset and index. Returns, flat, four per event:
 * epoch, offset, ms, replayed (0, or 1 and 2 as above). (On a Redis Cluster every key of
 * one call must share a slot: the caller groups the events by slot, and claims apart.)
 */
export const PUBLISH_BATCH_SCRIPT = `
local idempotencyTtl = ARGV[2]
local channelCount = tonumber(ARGV[3])
local markKeys = 1 + 2 * channelCount
local markCount = tonumber(ARGV[4])
local dedupeKeys = markKeys + markCount
local markArgs = 5 + 4 * channelCount
local marks = {}
local moved = {}
for m = 1, markCount do
  local mark = {-1, -1, false}
  local text = redis.call('GET', KEYS[markKeys + m])
  if text then
    local comma = string.find(text, ',', 1, true)
    mark[1] = tonumber(string.sub(text, 1, comma - 1))
    mark[2] = tonumber(string.sub(text, comma + 1))
    local logEnd = tonumber(ARGV[markArgs + 2 * m - 1])
    if logEnd >= 0 and mark[1] >= logEnd then
      -- Past where the source's log ends now: set aside only as its reader confirmed.
      if ARGV[markArgs + 2 * m] == text then
        mark[1] = -1
        mark[2] = -1
      else
        moved[#moved + 1] = m
        moved[#moved + 1] = text
      end
    end
  end
  marks[m] = mark
end
if #moved > 0 then return {'moved', unpack(moved)} end
if ARGV[5] ~= '' then
  local claimed = redis.call('SET', KEYS[#KEYS], ARGV[5], 'NX', 'GET', 'EX', idempotencyTtl)
  if claimed and claimed ~= ARGV[5] then return {'conflict'} end
end
local base = currentBase(KEYS[1], ARGV[1])
local now = redis.call('TIME')
local nowSeconds = tonumber(now[1])
local ms = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
local streams = {}
local replies = {}
local r = 0
for a = 6 + 4 * channelCount + 2 * markCount, #ARGV, 6 do
  local c = tonumber(ARGV[a])
  local d = tonumber(ARGV[a + 2])
  local m = tonumber(ARGV[a + 3])
  local seen = d > 0 and redis.call('GET', KEYS[dedupeKeys + d])
  if seen then
    local c1 = string.find(seen, ',', 1, true)
    local c2 = string.find(seen, ',', c1 + 1, true)
    replies[r + 1] = string.sub(seen, 1, c1 - 1)
    replies[r + 2] = tonumber(string.sub(seen, c1 + 1, c2 - 1))
    replies[r + 3] = string.sub(seen, c2 + 1)
    replies[r + 4] = 1
  else
    local originOffset = tonumber(ARGV[a + 4])
    local originIndex = tonumber(ARGV[a + 5])
    local mark = m > 0 and marks[m]
    if mark and (originOffset < mark[1] or (originOffset == mark[1] and originIndex <= mark[2])) then
      replies[r + 1] = ''
      replies[r + 2] = 0
      replies[r + 3] = '0'
      replies[r + 4] = 2
    else
      local p = 6 + 4 * (c - 1)
      local s = streams[c]
      if not s then
        local meta = redis.call('HMGET', KEYS[2 * c], 'epoch', 'base', 'offset')
        s = {epoch = meta[1], offset = tonumber(meta[3]) or 0, size = tonumber(ARGV[p]), entries = {}}
        if not s.epoch or meta[2] ~= base then
          s.epoch = bucketEpoch(base, tonumber(ARGV[p + 2]), nowSeconds)
          s.offset = 0
          redis.call('DEL', KEYS[2 * c + 1])
          redis.call('HSET', KEYS[2 * c], 'epoch', s.epoch, 'base', base)
        end
        streams[c] = s
      end
      s.offset = s.offset + 1
      local entry = s.epoch .. ',' .. s.offset .. ',' .. ms .. ',' .. ARGV[a + 1]
      if s.size > 0 then s.entries[#s.entries + 1] = entry end
      redis.call('PUBLISH', ARGV[p + 3], entry)
      if d > 0 then redis.call('SET', KEYS[dedupeKeys + d], s.epoch .. ',' .. s.offset .. ',' .. ms, 'EX', idempotencyTtl) end
      if mark then
        mark[1] = originOffset
        mark[2] = originIndex
        mark[3] = true
      end
      replies[r + 1] = s.epoch
      replies[r + 2] = s.offset
      replies[r + 3] = ms
      replies[r + 4] = 0
    end
  end
  r = r + 4
end
for c = 1, channelCount do
  local s = streams[c]
  if s then
    local p = 6 + 4 * (c - 1)
    redis.call('HSET', KEYS[2 * c], 'offset', s.offset)
    redis.call('EXPIRE', KEYS[2 * c], ARGV[p + 2])
    local n = #s.entries
    if n > 0 then
      -- Only the last \`size\` can stay: push no more than those, at most 1000 a command.
      for i = math.max(1, n - s.size + 1), n, 1000 do
        redis.call('RPUSH', KEYS[2 * c + 1], unpack(s.entries, i, math.min(i + 999, n)))
      end
      redis.call('LTRIM', KEYS[2 * c + 1], -s.size, -1)
      redis.call('EXPIRE', KEYS[2 * c + 1], ARGV[p + 1])
    end
  end
end
for m, mark in pairs(marks) do
  if mark[3] then redis.call('SET', KEYS[markKeys + m], mark[1] .. ',' .. mark[2], 'EX', idempotencyTtl) end
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
export const READ_SCRIPT = `
local base = currentBase(KEYS[3], ARGV[1])
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset', 'base')
local epoch = meta[1]
local offset = 0
if not epoch or meta[3] ~= base then
  epoch = bucketEpoch(base, tonumber(ARGV[2]), tonumber(redis.call('TIME')[1]))
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

/**
 * A script as it runs on a Redis Cluster: SPUBLISH (sharded pub/sub, the message stays in
 * the channel's shard) instead of PUBLISH (broadcast over the whole cluster bus).
 */
export function sharded (script: string): string {
  const classic = "redis.call('PUBLISH', ARGV[p + 3], entry)"
  if (!script.includes(classic)) throw new Error('no PUBLISH to shard in this script')
  return script.replace(classic, "redis.call('SPUBLISH', ARGV[p + 3], entry)")
}

/**
 * The entry body: what of the event is not its place in the stream, `{"type":…,"payload":…}`,
 * written around the payload's JSON (`JSON.stringify(payload)`, encoded once by the ingress):
 * the text JSON.stringify({ type, payload }) gives.
 */
export const entryBody = (type: string, payloadJson: string): string => `{"type":${jsonString(type)},"payload":${payloadJson}}`

const PAYLOAD_KEY = ',"payload":'

/**
 * The payload's JSON inside an entry entryBody wrote, as it was written: frames are built
 * around it rather than encoding the decoded payload again. The first `,"payload":` is the
 * one after the type: inside the type's JSON string every `"` is escaped. Undefined for an
 * entry of another shape.
 */
export function payloadJsonOfEntry (entry: string): string | undefined {
  const at = entry.indexOf(PAYLOAD_KEY)
  return at < 0 || entry.charCodeAt(entry.length - 1) !== 125 /* } */ ? undefined : entry.slice(at + PAYLOAD_KEY.length, -1)
}

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
