import { isUtf8 } from 'node:buffer'
import type { Static, TSchema } from '@sinclair/typebox'
import { type TypeCheck, TypeCompiler } from '@sinclair/typebox/compiler'
import {
  broadcastEvents, inventoryEvents, MissingFieldError, notificationEvents, notifyEvents, orderEvents,
  productEvents, publishEvents
} from './commerce-events.js'
import type { EventDraft } from '../core/event.js'
import { parseUntrustedJson } from './untrusted-json.js'
import { checkDrafts, type PublishLimits, PublishRefusedError, type RefusalKind } from './publish-limits.js'
import {
  BroadcastBody, InventoryBody, NotifyBody, OrderCancelledMessage, OrderCreatedMessage, OrderUpdatedMessage,
  ProductMessage, PublishBody, TestNotificationBody
} from './ingress-schemas.js'

/**
 * The Kafka topics of docs/protocol.md, Kafka and how a message value becomes event drafts. Pure:
 * no Kafka client here, so the mapping is tested without a broker and shared with
 * the HTTP routes through commerce-events.ts and ingress-schemas.ts.
 */
export const KAFKA_TOPICS = [
  'order.created', 'order.updated', 'order.cancelled', 'inventory.updated',
  'product.created', 'product.updated', 'notification.created', 'realtime.publish'
] as const

export type KafkaTopic = typeof KAFKA_TOPICS[number]

/**
 * Why a message cannot ever be delivered, whatever is retried: it goes to the DLQ.
 * `code` is stable (`invalid_json`, `schema_violation`, `missing_field`); the reason
 * line starts with it and then says precisely what is wrong.
 */
export type PoisonCode = 'invalid_json' | 'schema_violation' | 'missing_field' | RefusalKind

export type MappingResult =
  | { ok: true, drafts: EventDraft[], orderStatus?: string }
  | { ok: false, code: PoisonCode, reason: string }

export interface MappingOptions {
  lowStockThreshold: number
  /** The limits every publish obeys (lib/ingress/publish-limits.ts); a message over them is poison. */
  limits?: PublishLimits
}

/** The defaults of EVENT_MAX_BYTES and PUBLISH_MAX_BYTES, for callers that pass none. */
const DEFAULT_LIMITS: PublishLimits = { eventMaxBytes: 64 * 1024, publishMaxBytes: 4 * 1024 * 1024 }

/** The real topic names to subscribe to, prefixed, mapped back to their name in docs/protocol.md (Kafka). */
export function topicNames (prefix: string): Map<string, KafkaTopic> {
  return new Map(KAFKA_TOPICS.map((topic) => [`${prefix}${topic}`, topic]))
}

const compiled = <T extends TSchema>(schema: T) => TypeCompiler.Compile(schema)
const checkers = {
  orderCreated: compiled(OrderCreatedMessage),
  orderUpdated: compiled(OrderUpdatedMessage),
  orderCancelled: compiled(OrderCancelledMessage),
  inventory: compiled(InventoryBody),
  product: compiled(ProductMessage),
  notification: compiled(TestNotificationBody),
  publish: compiled(PublishBody),
  broadcast: compiled(BroadcastBody),
  notify: compiled(NotifyBody)
}

class SchemaViolation extends Error {}

/** Validates against a compiled schema; the error names the first bad field and its value. */
function validated<T extends TSchema> (checker: TypeCheck<T>, value: unknown): Static<T> {
  if (checker.Check(value)) return value
  const first = checker.Errors(value).First()
  const field = first === undefined || first.path === '' ? '(value)' : first.path.slice(1).replaceAll('/', '.')
  if (first !== undefined && first.value === undefined) throw new SchemaViolation(`${field}: is required`)
  const expected = Array.isArray(first?.schema.anyOf) ? `Expected ${first.schema.anyOf.map(describe).join(' or ')}` : first?.message
  throw new SchemaViolation(`${field}: ${expected ?? 'invalid'} (got ${preview(first?.value)})`)
}

/**
 * The start of a value's JSON for a reason line. A value nested thousands deep cannot be
 * encoded (JSON.stringify overflows the stack): that must still be a reason, not a throw
 * that leaves the message undelivered and never dead-lettered.
 */
function preview (value: unknown): string {
  try {
    return truncate(JSON.stringify(value), 80)
  } catch {
    return Array.isArray(value) ? 'an array nested too deep to show' : 'an object nested too deep to show'
  }
}

/** A union member in words, for reasons better than TypeBox's "Expected union value". */
function describe (schema: TSchema): string {
  const parts = [String(schema.type ?? 'value')]
  if (schema.pattern !== undefined) parts.push(`matching ${schema.pattern}`)
  if (schema.maxLength !== undefined) parts.push(`of ${schema.minLength ?? 0}-${schema.maxLength} chars`)
  if (schema.minimum !== undefined) parts.push(`>= ${schema.minimum}`)
  return parts.join(' ')
}

const truncate = (text: string, max: number): string => text.length > max ? `${text.slice(0, max)}…` : text

/** docs/protocol.md, Kafka `realtime.publish`: the target field picks the HTTP route whose body it is. */
function realtimePublishEvents (value: Record<string, unknown>): EventDraft[] {
  const kinds = [
    'channel' in value && 'channel',
    'channels' in value && 'channels',
    ('userId' in value || 'userIds' in value) && 'userId'
  ].filter((k): k is string => k !== false)
  if (kinds.length === 0) throw new MissingFieldError('channel', 'one of channel, channels, userId or userIds is required')
  if (kinds.length > 1) {
    throw new SchemaViolation(`(value): give exactly one of channel, channels or userId/userIds (got ${kinds.join(', ')})`)
  }
  switch (kinds[0]) {
    case 'channel': return publishEvents(validated(checkers.publish, value))
    case 'channels': return broadcastEvents(validated(checkers.broadcast, value))
    default: return notifyEvents(validated(checkers.notify, value))
  }
}

function draftsFor (topic: KafkaTopic, value: Record<string, unknown>, options: MappingOptions): { drafts: EventDraft[], orderStatus?: string } {
  switch (topic) {
    case 'order.created':
      return { drafts: orderEvents('created', validated(checkers.orderCreated, value)), orderStatus: 'created' }
    case 'order.updated': {
      const fact = validated(checkers.orderUpdated, value)
      return { drafts: orderEvents('updated', fact), orderStatus: fact.status }
    }
    case 'order.cancelled':
      return { drafts: orderEvents('cancelled', validated(checkers.orderCancelled, value)), orderStatus: 'cancelled' }
    case 'inventory.updated':
      return { drafts: inventoryEvents(validated(checkers.inventory, value), options.lowStockThreshold) }
    case 'product.created':
    case 'product.updated':
      return { drafts: productEvents(topic === 'product.created' ? 'created' : 'updated', validated(checkers.product, value)) }
    case 'notification.created':
      return { drafts: notificationEvents(validated(checkers.notification, value)) }
    case 'realtime.publish':
      return { drafts: realtimePublishEvents(value) }
  }
}

/**
 * One Kafka message value → the events to publish, or the reason it is poison.
 * Never throws for bad input: every way a value can be wrong becomes a reason.
 */
export function mapKafkaMessage (topic: KafkaTopic, value: Buffer | null, options: MappingOptions): MappingResult {
  if (value === null || value.length === 0) return { ok: false, code: 'invalid_json', reason: 'invalid_json: empty message value' }
  // JSON text is UTF-8 (RFC 8259 §8.1): a value that is not would reach clients with U+FFFD
  // where the producer's bytes were (audit, session 26), not unchanged in the DLQ.
  if (!isUtf8(value)) return { ok: false, code: 'invalid_json', reason: 'invalid_json: the value is not valid UTF-8' }
  let parsed: unknown
  try {
    parsed = parseUntrustedJson(value.toString('utf8'))
  } catch (err) {
    return { ok: false, code: 'invalid_json', reason: `invalid_json: ${truncate((err as Error).message, 200)}` }
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    const kind = parsed === null ? 'null' : Array.isArray(parsed) ? 'an array' : `a ${typeof parsed}`
    return { ok: false, code: 'schema_violation', reason: `schema_violation: (value): must be a JSON object (got ${kind})` }
  }
  try {
    const mapped = draftsFor(topic, parsed as Record<string, unknown>, options)
    checkDrafts(mapped.drafts, options.limits ?? DEFAULT_LIMITS, topic === 'realtime.publish' ? 'payload' : '')
    return { ok: true, ...mapped }
  } catch (err) {
    if (err instanceof PublishRefusedError) return { ok: false, code: err.kind, reason: `${err.kind}: ${err.message}` }
    if (err instanceof SchemaViolation) return { ok: false, code: 'schema_violation', reason: `schema_violation: ${err.message}` }
    if (err instanceof MissingFieldError) return { ok: false, code: 'missing_field', reason: `missing_field: ${err.field}: ${err.message}` }
    throw err
  }
}
