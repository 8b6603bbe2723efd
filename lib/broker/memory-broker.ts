import {
  type Broker, type BrokerOptions, DEFAULT_IDEMPOTENCY_TTL_SECONDS, type DeliverFn, type HistoryResult, type IdempotencyClaim,
  IdempotencyConflictError, policyOf, type SincePosition, SourceMovedError
} from './broker.js'
import { monotonicMs } from '../core/clock.js'
import type { EventDraft, PublishedEvent, StreamPosition } from '../core/event.js'
import { LocalControl } from './control.js'
import { ExpiringMap } from './expiring-map.js'
import { bucketEpoch, MEMORY_STREAM_FLOOR_SECONDS, newEpochBase, streamRetentionSeconds } from './epochs.js'
import type { ChannelHistory, HistoryPolicy } from './history-policy.js'
import { recoverFrom } from './recovery.js'

/**
 * A channel's stream. One exists only while the channel has local subscribers or was
 * published to within the retention (lib/broker/epochs.ts): a channel that is only read,
 * or subscribed to and left, leaves nothing behind. Small until it is published to (most
 * user:<id> channels never are): no arrays, small-integer fields and a shared epoch string.
 */
interface ChannelStream {
  /** The channel's HISTORY_POLICY entry (shared). */
  history: ChannelHistory
  epoch: string
  offset: number
  /** What is held of the published events; null until the first publish and once all of it expired. */
  log: ChannelLog | null
  /** In `monotonicMs`; 0 while never published. */
  lastPublishMs: number
  /** The hub has local subscribers (a flag here, not a Set entry per channel beside the stream's). */
  subscribed: boolean
}

interface ChannelLog {
  /** Newest last; at most historySize. Dropped whole once the TTL has passed since the last publish. */
  events: PublishedEvent[]
}

const NO_EVENTS: readonly PublishedEvent[] = Object.freeze([])

/** How long a channel's stream outlives its last publish here (lib/broker/epochs.ts). */
const retentionOf = (history: ChannelHistory): number => streamRetentionSeconds(history.ttlSeconds, MEMORY_STREAM_FLOOR_SECONDS)

/**
 * The embedded broker: one process, no network. Its limit is one node — events never
 * leave this instance, so it is what a single gateway runs on without REDIS_URL.
 * A stream keeps its offset and epoch for the retention after its last publish (its
 * history only for the history TTL), then restarts in a new epoch.
 */
export class MemoryBroker implements Broker {
  readonly kind = 'memory'
  readonly control = new LocalControl()
  private readonly streams = new Map<string, ChannelStream>()
  private readonly epochBase = newEpochBase()
  private readonly deliver: DeliverFn
  private readonly policy: HistoryPolicy
  private readonly sweeper: NodeJS.Timeout
  private closed = false

  /** Events published with a dedupe key, by channel and key: what a repeat answers. */
  private readonly deduped: ExpiringMap<PublishedEvent>
  /** Idempotency scopes claimed, with the fingerprint of the request that claimed each. */
  private readonly claims: ExpiringMap<string>
  /** Each ordered source's high-water mark (EventDraft.origin): the last offset and index published. */
  private readonly marks: ExpiringMap<[number, number]>

  constructor (options: BrokerOptions) {
    this.deliver = options.deliver
    this.policy = policyOf(options)
    const idempotencyTtlMs = (options.idempotencyTtlSeconds ?? DEFAULT_IDEMPOTENCY_TTL_SECONDS) * 1000
    this.deduped = new ExpiringMap(idempotencyTtlMs)
    this.claims = new ExpiringMap(idempotencyTtlMs)
    this.marks = new ExpiringMap(idempotencyTtlMs)
    this.sweeper = setInterval(() => this.sweep(), Math.min(options.historyTtlSeconds * 1000, 60_000))
    this.sweeper.unref()
  }

  async publish (draft: EventDraft): Promise<PublishedEvent> {
    if (this.closed) throw new Error('broker closed')
    return this.appendAll([draft], monotonicMs(), new Date().toISOString())[0]
  }

  /** Synchronous, so all of it or (closed, or a conflicting claim) none of it; the drafts share one timestamp. */
  async publishBatch (drafts: readonly EventDraft[], claim?: IdempotencyClaim): Promise<PublishedEvent[]> {
    if (this.closed) throw new Error('broker closed')
    if (claim !== undefined) {
      const claimed = this.claims.get(claim.scope)
      if (claimed === undefined) this.claims.set(claim.scope, claim.fingerprint)
      else if (claimed !== claim.fingerprint) throw new IdempotencyConflictError()
    }
    return this.appendAll(drafts, monotonicMs(), new Date().toISOString())
  }

  /**
   * Appends the drafts in order. A source's high-water mark is looked up and written once
   * per call, not per draft (a Kafka batch is one source): its drafts are checked against
   * the mark as the call advances it.
   */
  private appendAll (drafts: readonly EventDraft[], now: number, ts: string): PublishedEvent[] {
    const events = new Array<PublishedEvent>(drafts.length)
    // Only drafts with an origin (Kafka) need these: an HTTP publish allocates nothing for them.
    const marked = this.marksOf(drafts)
    const advanced = marked?.marks
    try {
      for (let i = 0; i < drafts.length; i++) {
        const draft = drafts[i]
        const origin = draft.origin
        if (origin === undefined || advanced === undefined) {
          events[i] = this.appendOnce(draft, now, ts)
          continue
        }
        const mark = advanced.get(origin.source) as [number, number]
        if (origin.offset < mark[0] || (origin.offset === mark[0] && origin.index <= mark[1])) {
          // Published already from this origin: nothing again (and no place kept for it).
          events[i] = { channel: draft.channel, type: draft.type, payload: draft.payload, offset: 0, epoch: '', ts, replayed: true }
          continue
        }
        mark[0] = origin.offset
        mark[1] = origin.index
        events[i] = this.appendOnce(draft, now, ts)
      }
    } finally {
      // Whatever was appended is marked, even if a delivery threw part of the way.
      if (marked !== undefined) for (const [source, mark] of marked.marks) if (mark[0] >= 0) this.marks.set(source, mark, marked.wall)
    }
    return events
  }

  /**
   * The marks of the drafts' sources, to be advanced by the call (undefined: no draft has
   * an origin), before anything is appended: a mark at or past where its source's log ends
   * now is set aside only as the reader confirmed (DraftOrigin.movedMarks), and otherwise
   * throws SourceMovedError.
   */
  private marksOf (drafts: readonly EventDraft[]): { marks: Map<string, [number, number]>, wall: number } | undefined {
    let marks: Map<string, [number, number]> | undefined
    let moved: Map<string, string> | undefined
    let wall = 0
    for (const { origin } of drafts) {
      if (origin === undefined || marks?.has(origin.source) === true) continue
      if (marks === undefined) {
        marks = new Map()
        wall = Date.now()
      }
      const stored = this.marks.get(origin.source, wall)
      let mark: [number, number] = stored === undefined ? [-1, -1] : [stored[0], stored[1]]
      if (stored !== undefined && origin.logEnd !== undefined && origin.logEnd >= 0 && stored[0] >= origin.logEnd) {
        const text = `${stored[0]},${stored[1]}`
        if (origin.movedMarks?.get(origin.source) === text) mark = [-1, -1]
        else (moved ??= new Map()).set(origin.source, text)
      }
      marks.set(origin.source, mark)
    }
    if (moved !== undefined) throw new SourceMovedError(moved)
    return marks === undefined ? undefined : { marks, wall }
  }

  /** A draft whose dedupe key was seen answers the first event; any other is appended. */
  private appendOnce (draft: EventDraft, now: number, ts: string): PublishedEvent {
    if (draft.dedupe === undefined) return this.append(draft, now, ts)
    const key = `${draft.channel}\u0000${draft.dedupe}`
    const first = this.deduped.get(key)
    if (first !== undefined) return { ...first, replayed: true }
    const event = this.append(draft, now, ts)
    this.deduped.set(key, event)
    return event
  }

  /** Takes the channel's next offset, keeps the event in history, and delivers it if subscribed. */
  private append (draft: EventDraft, now: number, ts: string): PublishedEvent {
    const stream = this.streams.get(draft.channel) ?? this.open(draft.channel)
    stream.offset += 1
    stream.lastPublishMs = now
    const event: PublishedEvent = {
      channel: draft.channel,
      type: draft.type,
      payload: draft.payload,
      offset: stream.offset,
      epoch: stream.epoch,
      ts
    }
    if (stream.history.size > 0) {
      const log = stream.log ?? (stream.log = { events: [] })
      log.events.push(event)
      if (log.events.length > stream.history.size) log.events.shift()
    }
    if (stream.subscribed) this.deliver(event, draft.payloadJson)
    return event
  }

  async subscribe (channel: string): Promise<void> {
    if (this.closed) return
    // The stream exists while subscribed, so its epoch stays the one its subscribers were given.
    const stream = this.streams.get(channel) ?? this.open(channel)
    stream.subscribed = true
  }

  async unsubscribe (channel: string): Promise<void> {
    const stream = this.streams.get(channel)
    if (stream === undefined) return
    stream.subscribed = false
    // Never published: nothing to keep (its epoch is the computed one anyway).
    if (stream.offset === 0) this.streams.delete(channel)
  }

  async position (channel: string): Promise<StreamPosition> {
    const stream = this.streams.get(channel)
    return stream === undefined ? this.emptyPosition(channel) : { offset: stream.offset, epoch: stream.epoch }
  }

  async history (channel: string, since?: SincePosition): Promise<HistoryResult> {
    const stream = this.streams.get(channel)
    if (stream === undefined) {
      const position = this.emptyPosition(channel)
      return since === undefined ? { events: [], position, recovered: true } : recoverFrom(since, position, NO_EVENTS)
    }
    this.trimExpired(stream, monotonicMs())
    const position = { offset: stream.offset, epoch: stream.epoch }
    if (since === undefined) return { events: [], position, recovered: true }
    return recoverFrom(since, position, stream.log?.events ?? NO_EVENTS)
  }

  async recent (channel: string, count: number): Promise<HistoryResult> {
    const stream = this.streams.get(channel)
    if (stream === undefined) return { events: [], position: this.emptyPosition(channel), recovered: true }
    this.trimExpired(stream, monotonicMs())
    const events = count > 0 ? (stream.log?.events ?? NO_EVENTS).slice(-count) : []
    return { events, position: { offset: stream.offset, epoch: stream.epoch }, recovered: true }
  }

  isReady (): boolean {
    return !this.closed
  }

  async close (): Promise<void> {
    this.closed = true
    clearInterval(this.sweeper)
    this.streams.clear()
  }

  /** How many streams are held (tests: nothing is left behind by subscribe and leave). */
  get streamCount (): number {
    return this.streams.size
  }

  private open (channel: string): ChannelStream {
    const history = this.policy.of(channel)
    const stream: ChannelStream = { history, epoch: this.emptyPosition(channel).epoch, offset: 0, log: null, lastPublishMs: 0, subscribed: false }
    this.streams.set(channel, stream)
    return stream
  }

  private emptyPosition (channel: string): StreamPosition {
    return { offset: 0, epoch: bucketEpoch(this.epochBase, Date.now(), retentionOf(this.policy.of(channel))) }
  }

  /**
   * The history lives the channel's TTL after its last publish, as a Redis key whose EXPIRE
   * every publish refreshes (lib/broker/broker.ts): a channel published to within the TTL
   * keeps its last `size` events however old the first of them is.
   */
  private trimExpired (stream: ChannelStream, now: number): void {
    if (stream.log === null || stream.lastPublishMs > now - stream.history.ttlSeconds * 1000) return
    // Expired: back to no log, as before the first publish (same epoch and offset).
    stream.log = null
  }

  private sweep (): void {
    this.deduped.sweep()
    this.claims.sweep()
    this.marks.sweep()
    const now = monotonicMs()
    for (const [channel, stream] of this.streams) {
      if (!stream.subscribed && now - stream.lastPublishMs > retentionOf(stream.history) * 1000) {
        this.streams.delete(channel)
      } else {
        this.trimExpired(stream, now)
      }
    }
  }
}
