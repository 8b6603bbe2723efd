import { textFrameOf } from './event.js'

/**
 * Live viewer counts (docs/protocol.md, "Presence"): for a channel under PRESENCE_CHANNELS,
 * how many connections hold it and how many distinct signed-in users they belong to, over
 * every instance.
 *
 * Each instance keeps its own *share* of a channel (its local connections and users) and
 * tells the others only when it changes, at most once per interval, through the broker's
 * PresenceBackend (Redis: a hash per channel with a field per instance, and the channel's
 * own pub/sub). It costs nothing per event and little per channel: a channel nobody joins
 * or leaves costs no work at all, and an instance that dies stops being counted once its
 * heartbeat is older than 1.5 intervals. The totals are the sum of the live shares
 * (users: the union of their user ids).
 */

/** One instance's part of a channel's presence. */
export interface PresenceShare {
  /** Connections holding the channel. */
  connections: number
  /** Distinct signed-in users among them, sorted. */
  userIds: string[]
}

export interface PresenceCounts {
  connections: number
  users: number
}

export interface PresenceTotals extends PresenceCounts {
  /** Distinct user ids over every instance (all of them; callers cap what they show). */
  userIds: string[]
}

/**
 * How shares travel between instances. The memory broker has none (one instance: its own
 * share is the whole); the Redis brokers implement it.
 */
export interface PresenceBackend {
  /** Every other live instance's share of the channel (this instance's own excluded). */
  load(channel: string): Promise<Map<string, PresenceShare>>
  /** Stores this instance's share (null: it holds the channel no more) and tells the other instances. */
  write(channel: string, share: PresenceShare | null): Promise<void>
  /**
   * Heartbeat: says this instance is alive; returns the instances alive now (this one
   * included), and `rejoined` when this instance had been counted as dead (or beats for the
   * first time): the others dropped its shares, so it must tell them again.
   */
  beat(): Promise<{ live: Set<string>, rejoined: boolean }>
  /** Called with another instance's share as it changes (null: that instance left the channel). */
  onShare(listener: (channel: string, nodeId: string, share: PresenceShare | null) => void): void
  /** Shutting down: this instance stops counting at once (its shares were withdrawn before). */
  leave(): Promise<void>
}

/**
 * Liveness of an instance's shares: it beats PRESENCE_BEATS_PER_INTERVAL times an interval
 * (lib/hub/presence-tracker.ts) and counts as dead to the others once unheard of for
 * PRESENCE_DEAD_INTERVALS intervals (lib/broker/redis-presence.ts), which they see at their
 * next tick, at most an interval later: 0.75 + 1 stays inside the two intervals the
 * protocol promises, and a live instance is dropped only after missing three beats.
 */
export const PRESENCE_BEATS_PER_INTERVAL = 4
export const PRESENCE_DEAD_INTERVALS = 0.75

export const EMPTY_SHARE: PresenceShare = Object.freeze({ connections: 0, userIds: Object.freeze([]) as unknown as string[] })

/** Whether `a` (undefined: nothing told yet) are the same numbers as `b`. */
export const sameCounts = (a: PresenceCounts | undefined, b: PresenceCounts): boolean =>
  a !== undefined && a.connections === b.connections && a.users === b.users

export function sameShare (a: PresenceShare | undefined, b: PresenceShare): boolean {
  return a !== undefined && a.connections === b.connections && a.userIds.length === b.userIds.length &&
    a.userIds.every((id, i) => id === b.userIds[i])
}

/** The totals of the shares: connections summed, users united. */
export function totalsOf (shares: Iterable<PresenceShare>): PresenceTotals {
  let connections = 0
  const users = new Set<string>()
  for (const share of shares) {
    connections += share.connections
    for (const id of share.userIds) users.add(id)
  }
  return { connections, users: users.size, userIds: [...users].sort() }
}

/** Whether a channel's presence is kept: its name starts with one of the prefixes (PRESENCE_CHANNELS). */
export function tracksPresence (prefixes: readonly string[], channel: string): boolean {
  for (const prefix of prefixes) if (channel.startsWith(prefix)) return true
  return false
}

/**
 * A channel's counts encoded once for every subscriber they go to: a presence push reaches
 * every local subscriber of the channel at once (a hot product page: thousands), and was
 * encoded and framed again for each. Like an event's (EncodedEvent, lib/core/event.ts), the
 * WebSocket frame is built whole, header included, and written to each socket as is.
 */
export class EncodedPresence {
  /** The WebSocket frame's JSON (docs/protocol.md, "Presence"): `{"type":"presence","channel","payload"}`. */
  readonly ws: string
  private wire?: Buffer
  private sseText?: string

  constructor (readonly channel: string, readonly counts: PresenceCounts) {
    this.ws = `{"type":"presence","channel":${JSON.stringify(channel)},"payload":${countsJson(counts)}}`
  }

  /** The whole WebSocket text frame around `ws`, for a socket with no extension. */
  get wsFrameBytes (): Buffer {
    this.wire ??= textFrameOf(this.ws)
    return this.wire
  }

  /** The SSE event, whole: `event: presence` and its data, with no `id:` (it is not an event of the channel), the same for every stream. */
  get sse (): string {
    this.sseText ??= `event: presence\ndata: {"channel":${JSON.stringify(this.channel)},"payload":${countsJson(this.counts)}}\n\n`
    return this.sseText
  }
}

const countsJson = (counts: PresenceCounts): string => `{"connections":${counts.connections},"users":${counts.users}}`
