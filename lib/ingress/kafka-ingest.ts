import type { EventDraft } from '../core/event.js'
import { type KafkaTopic, mapKafkaMessage, type MappingOptions } from './kafka-mapping.js'

/**
 * What happens to one Kafka message, independent of the Kafka client: map it, hand its
 * events to the broker (or the message to the DLQ), and retry transient failures until
 * they succeed or the consumer stops. The caller commits the offset only on
 * `delivered` or `dlq` — never on `stopped` — which is what makes ingestion
 * at-least-once.
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

export interface IngestContext {
  mapping: MappingOptions
  publish: (drafts: EventDraft[]) => Promise<unknown>
  deadLetter: (message: SourceMessage, headers: Headers) => Promise<void>
  /** Waits `ms`; resolves false if the consumer is stopping (or lost the partition) meanwhile. */
  sleep: (ms: number) => Promise<boolean>
  onRetry: (err: unknown, attempt: number, delayMs: number) => void
  backoff?: BackoffOptions
}

export type IngestResult =
  | { outcome: 'delivered', events: number, orderStatus?: string }
  | { outcome: 'dlq', reason: string }
  | { outcome: 'stopped' }

export interface BackoffOptions {
  initialMs: number
  maxMs: number
}

const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 200, maxMs: 5000 }

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
async function untilDone (action: () => Promise<unknown>, ctx: IngestContext): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    try {
      await action()
      return true
    } catch (err) {
      const delayMs = backoffDelay(attempt, ctx.backoff)
      ctx.onRetry(err, attempt, delayMs)
      if (!await ctx.sleep(delayMs)) return false
    }
  }
}

export async function ingestMessage (topic: KafkaTopic, message: SourceMessage, ctx: IngestContext): Promise<IngestResult> {
  const result = mapKafkaMessage(topic, message.value, ctx.mapping)
  if (result.ok) {
    const done = await untilDone(() => ctx.publish(result.drafts), ctx)
    return done ? { outcome: 'delivered', events: result.drafts.length, orderStatus: result.orderStatus } : { outcome: 'stopped' }
  }
  const headers = dlqHeaders(message, result.reason)
  const done = await untilDone(() => ctx.deadLetter(message, headers), ctx)
  return done ? { outcome: 'dlq', reason: result.reason } : { outcome: 'stopped' }
}
