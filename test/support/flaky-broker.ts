import { type Broker, BrokerUnavailableError, type DeliverFn, type IdempotencyClaim, type SincePosition } from '../../lib/broker/broker.js'
import type { EventDraft, PublishedEvent } from '../../lib/core/event.js'
import { MemoryBroker } from '../../lib/broker/memory-broker.js'

/**
 * A memory broker whose publishes fail while `down`, as the Redis broker's do when Redis
 * is unreachable (BrokerUnavailableError): the transient failure the Kafka consumer must
 * ride out. A failed call takes nothing, as the Broker contract says of a batch.
 * `downAfter(n)` lets the first n events through, then goes down: a failure mid-batch.
 */
export class FlakyBroker implements Broker {
  readonly kind = 'memory'
  /** Calls of at most 500 events, as the Redis broker asks for. */
  readonly maxBatchSize = 500
  down: boolean
  /** Events taken so far. */
  accepted = 0
  /** Publish calls refused so far. */
  refused = 0
  private budget = Infinity
  private readonly inner: MemoryBroker

  constructor (deliver: DeliverFn, { down = true, historySize = 100 } = {}) {
    this.down = down
    this.inner = new MemoryBroker({ deliver, historySize, historyTtlSeconds: 300 })
  }

  /** Up for `events` more events, then down (a call that would pass the budget is refused whole). */
  downAfter (events: number): void {
    this.down = false
    this.budget = this.accepted + events
  }

  up (): void {
    this.down = false
    this.budget = Infinity
  }

  async publish (draft: EventDraft): Promise<PublishedEvent> {
    this.admit(1)
    return await this.inner.publish(draft)
  }

  async publishBatch (drafts: readonly EventDraft[], claim?: IdempotencyClaim): Promise<PublishedEvent[]> {
    this.admit(drafts.length)
    return await this.inner.publishBatch(drafts, claim)
  }

  subscribe = async (channel: string) => await this.inner.subscribe(channel)
  unsubscribe = async (channel: string) => await this.inner.unsubscribe(channel)
  position = async (channel: string) => await this.inner.position(channel)
  history = async (channel: string, since?: SincePosition) => await this.inner.history(channel, since)
  recent = async (channel: string, count: number) => await this.inner.recent(channel, count)
  isReady = () => true
  get control () { return this.inner.control }
  close = async () => await this.inner.close()

  private admit (events: number): void {
    if (!this.down && this.accepted + events > this.budget) this.down = true
    if (this.down) {
      this.refused++
      throw new BrokerUnavailableError('redis is unreachable (test)')
    }
    this.accepted += events
  }
}
