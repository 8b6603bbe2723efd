import { BrokerUnavailableError } from './broker.js'
import type { RedisClient } from './redis-connection.js'
import type { PresenceBackend, PresenceShare } from '../core/presence.js'

/**
 * Presence shares between instances over Redis (lib/core/presence.ts). Per channel under
 * PRESENCE_CHANNELS, a hash `P presence:<ch>` holds each instance's share in a field named
 * after it; a change is stored there and announced on the channel's own pub/sub (the
 * instances that hold the channel are subscribed to it already), as `~p` and JSON, which no
 * broker entry can start with. A sorted set `P presence-nodes` holds each instance's last
 * heartbeat by Redis's clock: shares of an instance not heard from within `deadMs` do not
 * count, so a crashed instance drops out by itself.
 *
 * Cost: nothing per event; per instance, a heartbeat call four times per interval; per channel and
 * instance, one write (HSET or HDEL, EXPIRE, PUBLISH) per interval at most, only when its
 * share changed, and once an hour to keep the hash alive (docs/operations.md).
 */
export const PRESENCE_MESSAGE = '~p'

export interface PresenceLayout {
  /** The hash of a channel's shares. */
  sharesKey(channel: string): string
  /** The sorted set of instance heartbeats. */
  readonly nodesKey: string
  /** Where the channel's messages are published. */
  pubsubName(channel: string): string
}

/** How a share travels in the hash and on pub/sub. */
interface WireShare { c: number, u: string[] }
interface WireMessage { n: string, s: WireShare | null }

/** Returns 1 if this instance was not in the set (first beat, or dropped as dead), then the live instances. */
const BEAT_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
local reply = redis.call('ZRANGE', KEYS[1], 0, -1)
table.insert(reply, 1, added)
return reply
`

/** The instances alive now (read only: no heartbeat of this one). */
const LIVE_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
`

/** A share hash outlives the last write to it by this: every holder rewrites its share hourly. */
const SHARES_TTL_SECONDS = 3 * 3600

type BeatingRedis = RedisClient & {
  rtgPresenceBeat(key: string, nodeId: string, deadMs: number): Promise<[number, ...string[]]>
  rtgPresenceLive(key: string, deadMs: number): Promise<string[]>
}

export class RedisPresence implements PresenceBackend {
  private listener: (channel: string, nodeId: string, share: PresenceShare | null) => void = () => {}
  private live: Set<string> | null = null

  constructor (
    private readonly redis: RedisClient,
    private readonly layout: PresenceLayout,
    private readonly nodeId: string,
    private readonly deadMs: number,
    /** Publishes on a channel's pub/sub (PUBLISH; SPUBLISH on a cluster). */
    private readonly publish: (name: string, message: string) => Promise<unknown>,
    /** Holds the command connections' writes to the end of the turn (lib/broker/redis-turn-cork.ts). */
    private readonly holdWrites: () => void = () => {}
  ) {
    redis.defineCommand('rtgPresenceBeat', { numberOfKeys: 1, lua: BEAT_SCRIPT })
    redis.defineCommand('rtgPresenceLive', { numberOfKeys: 1, lua: LIVE_SCRIPT })
  }

  onShare (listener: (channel: string, nodeId: string, share: PresenceShare | null) => void): void {
    this.listener = listener
  }

  async beat (): Promise<{ live: Set<string>, rejoined: boolean }> {
    const [added, ...live] = await (this.redis as BeatingRedis).rtgPresenceBeat(this.layout.nodesKey, this.nodeId, this.deadMs)
    this.live = new Set(live)
    return { live: this.live, rejoined: added === 1 }
  }

  /** The other live instances' shares of a channel; BrokerUnavailableError (HTTP 503) while Redis is away. */
  async load (channel: string): Promise<Map<string, PresenceShare>> {
    let fields: Record<string, string>
    let live = this.live
    try {
      // A subscribe frame naming many channels loads them all in one turn: one write.
      this.holdWrites()
      fields = await this.redis.hgetall(this.layout.sharesKey(channel))
      // An instance that started since the last heartbeat may have written its share already,
      // and tells it again only when it changes: ask who is alive now rather than skip it.
      if (live === null || Object.keys(fields).some((nodeId) => nodeId !== this.nodeId && !live?.has(nodeId))) {
        this.holdWrites()
        live = new Set(await (this.redis as BeatingRedis).rtgPresenceLive(this.layout.nodesKey, this.deadMs))
      }
    } catch (err) {
      throw new BrokerUnavailableError('redis did not answer a presence read', { cause: err })
    }
    // A dead instance's shares (killed, or an earlier run of this one: shares are filed under
    // the run) count no more; they are not deleted here, as an instance only stalled may be
    // writing its share again this instant. The hash's TTL ends them.
    const shares = new Map<string, PresenceShare>()
    for (const [nodeId, text] of Object.entries(fields)) {
      if (nodeId === this.nodeId || !live.has(nodeId)) continue
      const share = parseShare(text)
      if (share !== null) shares.set(nodeId, share)
    }
    return shares
  }

  async leave (): Promise<void> {
    await this.redis.zrem(this.layout.nodesKey, this.nodeId)
  }

  async write (channel: string, share: PresenceShare | null): Promise<void> {
    const key = this.layout.sharesKey(channel)
    const wire: WireShare | null = share === null ? null : { c: share.connections, u: share.userIds }
    const tx = this.redis.multi()
    if (wire === null) tx.hdel(key, this.nodeId)
    else tx.hset(key, this.nodeId, JSON.stringify(wire)).expire(key, SHARES_TTL_SECONDS)
    await tx.exec()
    await this.publish(this.layout.pubsubName(channel), PRESENCE_MESSAGE + JSON.stringify({ n: this.nodeId, s: wire } satisfies WireMessage))
  }

  /** A `~p` message arrived on a held channel's pub/sub. */
  receive (channel: string, message: string): void {
    let parsed: WireMessage
    try {
      parsed = JSON.parse(message.slice(PRESENCE_MESSAGE.length)) as WireMessage
    } catch {
      return
    }
    if (typeof parsed.n !== 'string' || parsed.n === this.nodeId) return
    this.listener(channel, parsed.n, parsed.s === null ? null : parseWire(parsed.s))
  }
}

function parseShare (text: string): PresenceShare | null {
  try {
    return parseWire(JSON.parse(text) as WireShare)
  } catch {
    return null
  }
}

function parseWire (wire: WireShare): PresenceShare | null {
  if (typeof wire !== 'object' || wire === null || !Number.isSafeInteger(wire.c) || !Array.isArray(wire.u)) return null
  return { connections: wire.c, userIds: wire.u.filter((u): u is string => typeof u === 'string') }
}
