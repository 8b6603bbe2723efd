import { randomBytes } from 'node:crypto'
import type { Broker, BrokerOptions, DeliverFn, HistoryResult, SincePosition } from './broker.js'
import { monotonicMs } from '../core/clock.js'
import type { EventDraft, PublishedEvent, StreamPosition } from '../core/event.js'
import { recoverFrom } from './recovery.js'

/**
 * A channel's stream. One exists for every channel a client subscribed to, published to
 * or not (its epoch was handed out in the position read and must stay), so a stream is
 * small until it is published to (most user:<id> channels never are): no arrays, no
 * epoch string (it is made from `epochSeq` when read), small-integer fields only.
 */
interface ChannelStream {
  /** Numbers this stream among the broker's; its epoch is `epochOf(epochSeq)`, the same at every read. */
  epochSeq: number
  offset: number
  /** What is held of the published events; null until the first publish and once all of it expired. */
  log: ChannelLog | null
  /** In `monotonicMs`. */
  lastPublishMs: number
  /** The hub has local subscribers (a flag here, not a Set entry per channel beside the stream's). */
  subscribed: boolean
}

interface ChannelLog {
  /** The stream's epoch, made once and shared by its events. */
  epoch: string
  /** Newest last; at most historySize, none older than the TTL once trimmed. */
  events: PublishedEvent[]
  /** When each event was published, in `monotonicMs`. */
  times: number[]
}

const NO_EVENTS: readonly PublishedEvent[] = Object.freeze([])

/**
 * Epochs are a random prefix per broker (so a restarted gateway never repeats one) and
 * the stream's number in base 36: base64url characters only (no , or ; for SSE cursors).
 */
const epochPrefix = (): string => randomBytes(6).toString('base64url')

/**
 * The embedded broker: one process, no network. Its limit is one node — events never
 * leave this instance, so it is what a single gateway runs on without REDIS_URL.
 * A channel's stream (offset, epoch, history) is forgotten once it has had no local
 * subscriber and no publish for the history TTL; it then restarts in a new epoch.
 */
export class MemoryBroker implements Broker {
  readonly kind = 'memory'
  private readonly streams = new Map<string, ChannelStream>()
  private readonly epochPrefix = epochPrefix()
  private lastEpochSeq = 0
  private readonly deliver: DeliverFn
  private readonly historySize: number
  private readonly ttlMs: number
  private readonly sweeper: NodeJS.Timeout
  private closed = false

  constructor (options: BrokerOptions) {
    this.deliver = options.deliver
    this.historySize = options.historySize
    this.ttlMs = options.historyTtlSeconds * 1000
    this.sweeper = setInterval(() => this.sweep(), Math.min(this.ttlMs, 60_000))
    this.sweeper.unref()
  }

  async publish (draft: EventDraft): Promise<PublishedEvent> {
    if (this.closed) throw new Error('broker closed')
    const now = monotonicMs()
    const stream = this.stream(draft.channel, now)
    stream.offset += 1
    stream.lastPublishMs = now
    const log = stream.log ?? { epoch: this.epochOf(stream), events: [], times: [] }
    const event: PublishedEvent = {
      channel: draft.channel,
      type: draft.type,
      payload: draft.payload,
      offset: stream.offset,
      epoch: log.epoch,
      ts: new Date().toISOString()
    }
    if (this.historySize > 0) {
      stream.log = log
      log.events.push(event)
      log.times.push(now)
      if (log.events.length > this.historySize) {
        log.events.shift()
        log.times.shift()
      }
    }
    if (stream.subscribed) this.deliver(event)
    return event
  }

  async subscribe (channel: string): Promise<void> {
    if (!this.closed) this.stream(channel, monotonicMs()).subscribed = true
  }

  async unsubscribe (channel: string): Promise<void> {
    const stream = this.streams.get(channel)
    if (stream !== undefined) stream.subscribed = false
  }

  async position (channel: string): Promise<StreamPosition> {
    const stream = this.stream(channel, monotonicMs())
    return { offset: stream.offset, epoch: this.epochOf(stream) }
  }

  async history (channel: string, since?: SincePosition): Promise<HistoryResult> {
    const now = monotonicMs()
    const stream = this.stream(channel, now)
    this.trimExpired(stream, now)
    const position = { offset: stream.offset, epoch: this.epochOf(stream) }
    if (since === undefined) return { events: [], position, recovered: true }
    return recoverFrom(since, position, stream.log?.events ?? NO_EVENTS)
  }

  isReady (): boolean {
    return !this.closed
  }

  async close (): Promise<void> {
    this.closed = true
    clearInterval(this.sweeper)
    this.streams.clear()
  }

  private stream (channel: string, now: number): ChannelStream {
    let stream = this.streams.get(channel)
    if (stream === undefined) {
      stream = { epochSeq: ++this.lastEpochSeq, offset: 0, log: null, lastPublishMs: now, subscribed: false }
      this.streams.set(channel, stream)
    }
    return stream
  }

  private epochOf (stream: ChannelStream): string {
    return stream.log?.epoch ?? `${this.epochPrefix}${stream.epochSeq.toString(36)}`
  }

  private trimExpired (stream: ChannelStream, now: number): void {
    const log = stream.log
    if (log === null) return
    const cutoff = now - this.ttlMs
    let drop = 0
    while (drop < log.times.length && log.times[drop] <= cutoff) drop++
    if (drop === log.times.length) {
      // All expired: back to no log, as before the first publish (same epoch).
      stream.log = null
    } else if (drop > 0) {
      log.events.splice(0, drop)
      log.times.splice(0, drop)
    }
  }

  private sweep (): void {
    const now = monotonicMs()
    for (const [channel, stream] of this.streams) {
      if (!stream.subscribed && now - stream.lastPublishMs > this.ttlMs) {
        this.streams.delete(channel)
      } else {
        this.trimExpired(stream, now)
      }
    }
  }
}
