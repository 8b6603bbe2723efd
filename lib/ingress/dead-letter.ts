import { DLQ_HEADERS, type Headers } from './kafka-ingest.js'

/**
 * When a poison message cannot be copied to the DLQ whole (docs/protocol.md, Kafka). The
 * copy is the message plus the `x-dlq-*` headers, so a message just under the broker's size
 * limit, or one its producer compressed, can be too large for the DLQ topic. Kafka refuses
 * such a record for good, and retrying it held the partition behind it for ever (audit: a
 * 3 MiB compressed value that was not JSON). The copy is sent compressed (plugins/kafka.ts);
 * if Kafka still refuses it as too large, a stand-in goes to the DLQ instead: the `x-dlq-*`
 * headers, the key when small, and `x-dlq-omitted` saying what was left out, so an operator
 * can read the original at its source topic, partition and offset.
 */
export const DLQ_OMITTED_HEADER = 'x-dlq-omitted'

/**
 * A key up to this size stays in the stand-in (keys are usually ids). Small, so the stand-in
 * fits whatever limit a DLQ topic has: with 16 KiB, a poison message with an 8 KB key and a
 * DLQ topic limited to 4000 bytes had its stand-in refused too, for ever (audit, session 29).
 */
const STAND_IN_MAX_KEY_BYTES = 1024

/** Kafka's answers to a record or batch over the topic's size limit: no retry changes them. */
const TOO_LARGE = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE'])

/** Whether `err` (a kafkajs error, possibly wrapped by its retrier or aggregated) is Kafka refusing the record as too large. */
export function refusedAsTooLarge (err: unknown, depth = 0): boolean {
  if (typeof err !== 'object' || err === null || depth > 4) return false
  const { type, cause, errors } = err as { type?: unknown, cause?: unknown, errors?: unknown }
  if (typeof type === 'string' && TOO_LARGE.has(type)) return true
  if (refusedAsTooLarge(cause, depth + 1)) return true
  return Array.isArray(errors) && errors.some((e) => refusedAsTooLarge(e, depth + 1))
}

export interface DeadLetterRecord {
  key: Buffer | null
  value: Buffer | null
  headers: Headers
}

/** The stand-in for a message too large to dead-letter whole: `headers` are its DLQ headers (dlqHeaders). */
export function standInRecord (message: { key: Buffer | null, value: Buffer | null, headers?: Headers }, headers: Headers): DeadLetterRecord {
  const keyFits = message.key === null || message.key.length <= STAND_IN_MAX_KEY_BYTES
  const kept: Headers = {}
  for (const name of Object.values(DLQ_HEADERS)) kept[name] = headers[name]
  const omitted = [`value (${message.value?.length ?? 0} bytes)`]
  if (Object.keys(message.headers ?? {}).length > 0) omitted.push('headers')
  if (!keyFits) omitted.push(`key (${message.key?.length ?? 0} bytes)`)
  kept[DLQ_OMITTED_HEADER] = `${omitted.join(', ')}: too large for the DLQ topic; read the original at its source offset`
  return { key: keyFits ? message.key : null, value: null, headers: kept }
}
