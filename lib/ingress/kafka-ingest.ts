import { setImmediate as nextTurn } from 'node:timers/promises'
import { SourceMovedError } from '../broker/broker.js'
import type { EventDraft } from '../core/event.js'
import { kafkaSource, withKafkaOrigin } from './idempotency.js'
import { type KafkaTopic, mapKafkaMessage, type MappingOptions, type MappingResult } from './kafka-mapping.js'

/**
 * What happens to a batch of one partition's Kafka messages, independent of the Kafka
 * client: map each message, hand the events to the broker (or the message to the DLQ),
 * retry transient failures in place, and report each message as settled, in offset
 * order, once it and every earlier message of the batch were handed over. The caller
 * resolves and commits offsets only from `settled` — never past a message still being
 * retried — which is what makes ingestion at-least-once.
 *
 * Throughput without giving up order: the events of consecutive good messages are handed
 * to the broker as one call (`publish`: Broker.publishBatch, one Redis script run, up to
 * `maxEventsPerPublish` events; brokers assign offsets in call order), never one message
 * at a time. Calls are made one after another within a partition — a call starts once the
 * previous one was accepted — so a failed call is retried before anything after it is
 * published, and a channel never sees a later message's events before an earlier one's.
 * Partitions run side by side (the caller's concurrency).
 *
 * A message's events are never split over two calls, so a message is delivered whole or
 * not at all whenever the broker's batch is atomic (memory; Redis, one script per call).
 */

/** Headers added to a dead-lettered message; its own key, value and headers are kept. */
export const DLQ_HEADERS = {
  topic: 'x-dlq-source-topic',
  partition: 'x-dlq-source-partition',
  offset: 'x-dlq-source-offset',
  reason: 'x-dlq-reason',
  failedAt: 'x-dlq-failed-at'
} as const

export type Headers = Record<string, Buffer | string | Array<Buffer | string> | undefined>

export interface SourceMessage {
  /** The real topic name (with any prefix). */
  topic: string
  partition: number
  offset: string
  key: Buffer | null
  value: Buffer | null
  headers?: Headers
}

/** A message as a batch carries it: its topic and partition are the batch's. */
export type BatchMessage = Omit<SourceMessage, 'topic' | 'partition'>

export interface SourceBatch<M extends BatchMessage = BatchMessage> {
  topic: string
  partition: number
  messages: readonly M[]
  /** The partition's high watermark when the batch was fetched (kafkajs Batch.highWatermark). */
  highWatermark?: string
}

export interface IngestContext {
  mapping: MappingOptions
  /** Hands the drafts to the broker in one call, in the order given; rejects if they could not all be. */
  publish: (drafts: EventDraft[]) => Promise<unknown>
  deadLetter: (message: SourceMessage, headers: Headers) => Promise<void>
  /** Waits `ms`; resolves false if the consumer is stopping (or lost the partition) meanwhile. */
  sleep: (ms: number) => Promise<boolean>
  onRetry: (err: unknown, attempt: number, delayMs: number) => void
  backoff?: BackoffOptions
}

export interface BatchContext<M extends BatchMessage = BatchMessage> extends IngestContext {
  /** False once the consumer stops or the partition is no longer ours: nothing more is started. */
  running: () => boolean
  /**
   * Asked when the broker finds the partition's mark past where this batch's log ends
   * (SourceMovedError): resolves true only once the group has confirmed, since that was
   * found, that the partition is still ours, so the mark was left by a log that is gone (a
   * topic created again) and the call is published again, setting it aside. False (this
   * member was paused past its session, and another one has published past this batch):
   * nothing more of the batch is published. Absent: always false.
   */
  confirmOwnership?: () => Promise<boolean>
  /**
   * Called in offset order for each message once it and every earlier message of the batch
   * were handed over: its offset may be resolved (and committed). `last` marks the last
   * message settled before the batch goes on with a call or waits: resolving offsets only
   * then commits the same (a commit carries the highest resolved offset).
   */
  settled: (message: M, outcome: SettledOutcome, last: boolean) => void
  /**
   * Most events in one publish call (the broker's maxBatchSize); a message with more still
   * goes in one call of its own.
   */
  maxEventsPerPublish?: number
}

export type SettledOutcome =
  | { outcome: 'delivered', events: number, orderStatus?: string }
  | { outcome: 'dlq', reason: string }

export type IngestResult = SettledOutcome | { outcome: 'stopped' }

export interface BackoffOptions {
  initialMs: number
  maxMs: number
}

const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 200, maxMs: 5000 }
/**
 * Events per publish call when the broker sets no limit of its own: on the memory broker a
 * call runs synchronously, delivery and socket writes included, so this bounds how long
 * the event loop is held (about 10 ms here). Larger calls mean fewer socket writes: a
 * client gets one write per call, whatever number of its events the call carries.
 */
export const MAX_EVENTS_PER_PUBLISH = 4000

/** Exponential backoff with ±20 % jitter, so instances that failed together do not retry together. */
export function backoffDelay (attempt: number, options: BackoffOptions = DEFAULT_BACKOFF): number {
  const base = Math.min(options.maxMs, options.initialMs * 2 ** Math.max(0, attempt - 1))
  return Math.round(base * (0.8 + Math.random() * 0.4))
}

export function dlqHeaders (message: SourceMessage, reason: string, now = new Date()): Headers {
  return {
    ...message.headers,
    [DLQ_HEADERS.topic]: message.topic,
    [DLQ_HEADERS.partition]: String(message.partition),
    [DLQ_HEADERS.offset]: message.offset,
    [DLQ_HEADERS.reason]: reason,
    [DLQ_HEADERS.failedAt]: now.toISOString()
  }
}

/**
 * Runs `action` until it resolves; every rejection is treated as transient (the broker
 * or Kafka is unreachable) and retried after a backoff. Poison never gets here: it was
 * recognised by the mapping, so retrying is always worth it. False when stopped first.
 */
async function untilDone (action: () => Promise<unknown>, ctx: IngestContext, first: Promise<unknown> = action()): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    try {
      await (attempt === 1 ? first : action())
      return true
    } catch (err) {
      const delayMs = backoffDelay(attempt, ctx.backoff)
      ctx.onRetry(err, attempt, delayMs)
      if (!await ctx.sleep(delayMs)) return false
    }
  }
}

/** One message alone (the batch path with a batch of one). */
export async function ingestMessage (topic: KafkaTopic, message: SourceMessage, ctx: IngestContext): Promise<IngestResult> {
  let result: IngestResult = { outcome: 'stopped' }
  await ingestBatch(topic, { topic: message.topic, partition: message.partition, messages: [message] }, {
    ...ctx,
    running: () => true,
    settled: (_m, outcome) => { result = outcome }
  })
  return result
}

/**
 * Ingests one partition's batch (see the top of this file). Resolves 'done' once every
 * message was settled, 'stopped' if the consumer stopped first: the messages not settled
 * then are redelivered to whoever owns the partition next.
 */
export async function ingestBatch<M extends BatchMessage> (topic: KafkaTopic, batch: SourceBatch<M>, ctx: BatchContext<M>): Promise<'done' | 'stopped'> {
  const { messages } = batch
  // Each message's drafts carry their origin: the broker publishes them at most once (effectively once).
  const origin = kafkaSource(batch.topic, batch.partition, batch.highWatermark)
  const mapped = messages.map((m) => {
    const result = mapKafkaMessage(topic, m.value, ctx.mapping)
    if (result.ok) withKafkaOrigin(result.drafts, origin, m.offset)
    return result
  })
  const maxEvents = ctx.maxEventsPerPublish ?? MAX_EVENTS_PER_PUBLISH
  const source = (m: M): SourceMessage => ({ ...m, topic: batch.topic, partition: batch.partition })

  // Poison has no events, so no channel's order depends on it: its DLQ sends all leave at
  // once, and only its offset waits (a failed send is retried in place when its turn comes).
  const deadLetters = new Map<number, { reason: string, sent: Promise<void> }>()
  mapped.forEach((result, i) => {
    if (result.ok) return
    const message = source(messages[i])
    const sent = ctx.deadLetter(message, dlqHeaders(message, result.reason))
    sent.catch(() => {}) // looked at in its turn, below
    deadLetters.set(i, { reason: result.reason, sent })
  })

  let attempt = 0
  for (let i = 0; i < messages.length;) {
    if (!ctx.running()) return 'stopped'
    const poison = deadLetters.get(i)
    if (poison !== undefined) {
      const message = source(messages[i])
      if (!await untilDone(() => ctx.deadLetter(message, dlqHeaders(message, poison.reason)), ctx, poison.sent)) return 'stopped'
      ctx.settled(messages[i], { outcome: 'dlq', reason: poison.reason }, true)
      i++
      continue
    }
    const { drafts, end } = nextCall(mapped, i, maxEvents)
    try {
      await ctx.publish(drafts)
    } catch (err) {
      if (err instanceof SourceMovedError) {
        // Published again with the marks set aside if they still read the same; moved meanwhile, this comes back.
        if (ctx.confirmOwnership === undefined || !await ctx.confirmOwnership()) return 'stopped'
        for (const draft of drafts) if (draft.origin !== undefined) draft.origin.movedMarks = err.marks
        continue
      }
      // Nothing after this call was issued: retry it in place, then go on in order.
      const delayMs = backoffDelay(++attempt, ctx.backoff)
      ctx.onRetry(err, attempt, delayMs)
      if (!await ctx.sleep(delayMs)) return 'stopped'
      continue
    }
    attempt = 0
    for (; i < end; i++) {
      const result = mapped[i] as Extract<MappingResult, { ok: true }>
      ctx.settled(messages[i], { outcome: 'delivered', events: result.drafts.length, orderStatus: result.orderStatus }, i === end - 1)
    }
    // Let sockets and timers run between calls: a large batch on the memory broker is
    // otherwise one long synchronous stretch.
    if (i < messages.length) await nextTurn()
  }
  return 'done'
}

/**
 * The drafts of the good messages from `from` on, up to `maxEvents` (at least one message),
 * and where they end. Where effectively-once will hook in: here each draft's origin is
 * known (batch topic and partition, messages[end].offset, its index in result.drafts), so
 * it can ride on the draft to publishBatch and be checked in the same atomic step.
 */
function nextCall (mapped: readonly MappingResult[], from: number, maxEvents: number): { drafts: EventDraft[], end: number } {
  const drafts: EventDraft[] = []
  let end = from
  while (end < mapped.length) {
    const result = mapped[end]
    if (!result.ok || (end > from && drafts.length + result.drafts.length > maxEvents)) break
    for (const draft of result.drafts) drafts.push(draft)
    end++
  }
  return { drafts, end }
}
