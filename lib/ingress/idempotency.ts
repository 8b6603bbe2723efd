import { createHash } from 'node:crypto'
import type { EventDraft } from '../core/event.js'
import { deepestPath, MAX_PAYLOAD_DEPTH, PublishRefusedError } from './publish-limits.js'

/**
 * Idempotent publishing (docs/protocol.md, "Idempotent publishing"): what an Idempotency-Key
 * turns into. A caller's key is its *scope*: claimed by the request that first used it (with
 * that request's fingerprint) for IDEMPOTENCY_TTL_SECONDS, on every instance, in the same
 * step as its publish (Broker.publishBatch); each of the request's events carries a dedupe
 * key derived from the scope, which the broker checks in that step too. So a repeat publishes nothing new (it gets the first
 * request's places back), a crash half way is completed by the retry without doubling
 * anything, and two racing requests publish each event once and answer the same receipt.
 */

/** 1–255 printable ASCII characters (as the IETF Idempotency-Key draft's keys are). */
const KEY = /^[\x20-\x7E]{1,255}$/

export class IdempotencyKeyError extends Error {
  readonly statusCode = 400
}

/**
 * The request's Idempotency-Key, undefined when it has none; IdempotencyKeyError when it is
 * malformed or given more than once. `values` are the header's values as sent, one per
 * header line (headerValues): Node joins repeated lines of a header it does not know with
 * ", ", and "a, b" is itself a well-formed key, so two keys would silently become a third.
 */
export function idempotencyKeyOf (values: readonly string[]): string | undefined {
  if (values.length === 0) return undefined
  if (values.length > 1) throw new IdempotencyKeyError('Idempotency-Key: given more than once; send one value')
  const [header] = values
  if (!KEY.test(header)) {
    throw new IdempotencyKeyError('Idempotency-Key: must be one value of 1 to 255 printable ASCII characters')
  }
  return header
}

/** Every value of header `name` (lower case) as sent, one per header line, from Node's `rawHeaders`. */
export function headerValues (rawHeaders: readonly string[], name: string): string[] {
  const values: string[] = []
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i].length === name.length && rawHeaders[i].toLowerCase() === name) values.push(rawHeaders[i + 1])
  }
  return values
}

/** A caller's key, unambiguous whatever either contains (the caller's length first). */
export const scopeOf = (caller: string | null, key: string): string => {
  const who = caller ?? ''
  return `${who.length}:${who}:${key}`
}

/**
 * Deepest a body may nest to be fingerprinted: a payload's limit plus the body around it.
 * The drafts were checked, but a field no event carries was not, and JSON.stringify of a
 * body nested thousands deep overflows the stack (a 500, not an answer).
 */
const MAX_BODY_DEPTH = MAX_PAYLOAD_DEPTH + 1

/** What the request asked, so the same key with another request can be told apart (422); PublishRefusedError (400) when nested too deep. */
export function fingerprintOf (route: string, body: unknown): string {
  const tooDeep = deepestPath(body, MAX_BODY_DEPTH)
  if (tooDeep !== null) {
    throw new PublishRefusedError('too_deep', 400, tooDeep === '' ? '(body)' : tooDeep, `nested deeper than ${MAX_BODY_DEPTH} levels (with Idempotency-Key)`)
  }
  return createHash('sha256').update(route).update('\n').update(JSON.stringify(body) ?? '').digest('base64url')
}

/** The request's drafts, each with its dedupe key (its index in the request: the mapping is deterministic). */
export const withDedupe = (drafts: readonly EventDraft[], scope: string): EventDraft[] =>
  drafts.map((draft, i) => ({ ...draft, dedupe: `h:${scope}:${i}` }))

/** What the origins of a partition's messages share: the same for every message of a batch. */
export interface KafkaSource {
  source: string
  logEnd?: number
}

/**
 * A partition as its messages' origin. `highWatermark`, the partition's when the batch was
 * fetched, lets the broker tell a log that is gone (a topic created again) from a message
 * read again (DraftOrigin.logEnd).
 */
export function kafkaSource (topic: string, partition: number, highWatermark?: string): KafkaSource {
  const source = `${topic}:${partition}`
  // A partition with messages ends past 0; anything else is no high watermark.
  const logEnd = Number(highWatermark)
  return Number.isSafeInteger(logEnd) && logEnd > 0 ? { source, logEnd } : { source }
}

/** A Kafka message's events, with where they come from: reading the message again publishes nothing new. */
export function withKafkaOrigin (drafts: EventDraft[], from: KafkaSource, offset: string): EventDraft[] {
  const { source, logEnd } = from
  const at = Number(offset)
  for (let i = 0; i < drafts.length; i++) drafts[i].origin = logEnd !== undefined ? { source, offset: at, index: i, logEnd } : { source, offset: at, index: i }
  return drafts
}
