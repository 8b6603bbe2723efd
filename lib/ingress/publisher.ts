import type { Broker, IdempotencyClaim } from '../broker/broker.js'
import type { EventDraft, PublishedEvent, StreamPosition } from '../core/event.js'
import type { WriteBatch } from '../core/write-batch.js'
import { channelRecord } from '../core/channel-record.js'

export interface PublishReceipt {
  /** Per channel, the position of the last event this publish put there. */
  positions: Record<string, StreamPosition>
  events: Array<{ channel: string, type: string, offset: number, epoch: string }>
}

/** Where drafts go: the app's broker, and its write batching for bursts (the Hub is one). */
export interface PublishTarget {
  broker: Broker
  writeBatch: WriteBatch
}

/**
 * Publishes drafts in the order given, as one batch (Broker.publishBatch: one call, one
 * Redis round trip, all or nothing), so events for the same channel keep the order of the
 * drafts. Rejects if the batch was not taken; the caller reports failure (never a silent
 * 202) or, for Kafka, retries it whole. Several drafts are one burst (lib/core/write-batch.ts):
 * what a broker delivers while they are issued (the memory broker, synchronously) leaves as
 * one write per socket. With `claim` (an Idempotency-Key), the broker claims it in the same
 * step (Broker.publishBatch): IdempotencyConflictError when another request holds it.
 */
export async function publishAll ({ broker, writeBatch }: PublishTarget, drafts: readonly EventDraft[], claim?: IdempotencyClaim): Promise<PublishedEvent[]> {
  if (drafts.length === 1) return claim === undefined ? [await broker.publish(drafts[0])] : await broker.publishBatch(drafts, claim)
  return await writeBatch.inBurst(() => broker.publishBatch(drafts, claim))
}

export function receiptOf (events: readonly PublishedEvent[]): PublishReceipt {
  const positions = channelRecord<StreamPosition>()
  for (const e of events) positions[e.channel] = { offset: e.offset, epoch: e.epoch }
  return {
    positions,
    events: events.map((e) => ({ channel: e.channel, type: e.type, offset: e.offset, epoch: e.epoch }))
  }
}
