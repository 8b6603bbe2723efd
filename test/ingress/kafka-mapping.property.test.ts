import fc from 'fast-check'
import t from 'tap'
import { MemoryBroker } from '../../lib/broker/memory-broker.js'
import { isValidChannelName } from '../../lib/auth/channels.js'
import { ingestMessage, type SourceMessage } from '../../lib/ingress/kafka-ingest.js'
import { KAFKA_TOPICS, type KafkaTopic, mapKafkaMessage } from '../../lib/ingress/kafka-mapping.js'
import { publishAll } from '../../lib/ingress/publisher.js'
import { WriteBatch } from '../../lib/core/write-batch.js'

/**
 * Kafka values are whatever a producer wrote (docs/protocol.md, Kafka). For every topic, any
 * bytes map to events that obey the channel rules and the publish limits, or to a DLQ reason
 * that starts with its code; and ingesting the message settles it (delivered or dead-lettered)
 * without a retry: poison is never mistaken for a transient failure, which would stall the partition.
 * A failure prints fast-check's seed and path: rerun with `{ seed, path }` to replay it.
 */
const NUM_RUNS = 300
const CODES = ['invalid_json', 'schema_violation', 'missing_field', 'too_deep', 'too_large', 'reserved_type']
const limits = { eventMaxBytes: 64 * 1024, publishMaxBytes: 4 * 1024 * 1024 }
const options = { lowStockThreshold: 5, limits }
const topic = fc.constantFrom(...KAFKA_TOPICS)

/** JSON text nested `depth` levels deep, arrays and objects in turn: built as text, as a producer would send it. */
const nested = (depth: number): string => {
  const open = Array.from({ length: depth }, (_, i) => i % 2 === 0 ? '[' : '{"a":').join('')
  const close = Array.from({ length: depth }, (_, i) => (depth - 1 - i) % 2 === 0 ? ']' : '}').join('')
  return `${open}1${close}`
}

/** Field values of every kind, as JSON text, including some only a hostile producer sends. */
const anyValue: fc.Arbitrary<string> = fc.oneof(
  { weight: 6, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)) },
  { weight: 2, arbitrary: fc.constantFrom('o1', 'u1', 'p1', 'room:a', 'system:x', 'shipped', 1, 0, -1, 2 ** 53 + 2, 1.5, '', 'a,b').map((v) => JSON.stringify(v)) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 20_000 }).map(nested) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 100_000 }).map((n) => `"${'x'.repeat(n)}"`) },
  { weight: 1, arbitrary: fc.array(fc.constantFrom('room:a', 'event:b', 'product:1', 'bad name'), { maxLength: 1100 }).map((v) => JSON.stringify(v)) }
)

const objectText = (fields: Record<string, string>): string =>
  `{${Object.entries(fields).map(([key, value]) => `${JSON.stringify(key)}:${value}`).join(',')}}`

/** Objects with the fields the topics read (orderId, status, channel, payload, …), each of any kind. */
const messageLike = fc.record({
  orderId: anyValue,
  buyerId: anyValue,
  userId: anyValue,
  userIds: anyValue,
  status: anyValue,
  productId: anyValue,
  stock: anyValue,
  previousStock: anyValue,
  message: anyValue,
  channel: anyValue,
  channels: anyValue,
  type: anyValue,
  payload: fc.oneof(anyValue, fc.dictionary(fc.string({ maxLength: 10 }), anyValue, { maxKeys: 5 }).map(objectText)),
  items: anyValue
}, { requiredKeys: [] }).map(objectText)

const valueBytes = fc.oneof(
  fc.uint8Array({ maxLength: 2000 }).map((bytes) => Buffer.from(bytes)),
  fc.json({ maxDepth: 5 }).map((text) => Buffer.from(text)),
  messageLike.map((text) => Buffer.from(text))
)

function checkMapping (name: KafkaTopic, value: Buffer): void {
  const result = mapKafkaMessage(name, value, options)
  if (!result.ok) {
    if (!CODES.includes(result.code) || !result.reason.startsWith(`${result.code}: `)) throw new Error(`reason ${result.reason}`)
    return
  }
  for (const draft of result.drafts) {
    if (!isValidChannelName(draft.channel)) throw new Error(`invalid channel ${draft.channel}`)
    if (draft.type.startsWith('system:')) throw new Error(`reserved type ${draft.type}`)
    if (Buffer.byteLength(JSON.stringify(draft.payload)) > limits.eventMaxBytes) throw new Error('payload over EVENT_MAX_BYTES')
  }
}

t.test('any value of any topic maps to events within the rules or to a DLQ reason', async (t) => {
  fc.assert(fc.property(topic, valueBytes, checkMapping), { numRuns: NUM_RUNS * 2 })
  t.pass('no escape')
})

/** Byte sequences that are not UTF-8: a stray byte, a cut sequence, a lone continuation, an overlong form, an encoded surrogate. */
const notUtf8 = fc.constantFrom([0xff], [0xc3, 0x28], [0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82])

t.test('a value that is not UTF-8 anywhere, even inside a string, is dead-lettered as invalid_json, never delivered changed', async (t) => {
  fc.assert(fc.property(topic, messageLike, fc.nat(), notUtf8, (name, text, at, bad) => {
    // Inside the first string of the text when it has one (where a lossy decode went unnoticed), else at any place.
    const quote = text.indexOf('"', text.indexOf(':'))
    const cut = quote > 0 ? quote + 1 : at % (text.length + 1)
    const value = Buffer.concat([Buffer.from(text.slice(0, cut)), Buffer.from(bad), Buffer.from(text.slice(cut))])
    const result = mapKafkaMessage(name, value, options)
    if (result.ok || result.code !== 'invalid_json') throw new Error(`mapped as ${result.ok ? 'events' : result.reason}`)
  }), { numRuns: NUM_RUNS })
})

t.test('ingesting any value settles it, delivered or dead-lettered, without a retry', async (t) => {
  const broker = new MemoryBroker({ deliver: () => {}, historySize: 10, historyTtlSeconds: 60 })
  t.teardown(() => broker.close())
  const target = { broker, writeBatch: new WriteBatch() }
  let offset = 0
  await fc.assert(fc.asyncProperty(topic, valueBytes, async (name, value) => {
    const message: SourceMessage = { topic: `p.${name}`, partition: 0, offset: String(offset++), key: null, value }
    const dead: string[] = []
    const retries: unknown[] = []
    const result = await ingestMessage(name, message, {
      mapping: options,
      publish: async (drafts) => await publishAll(target, drafts),
      deadLetter: async (m, headers) => { dead.push(String(headers['x-dlq-reason'])); if (m.offset !== message.offset) throw new Error('wrong message') },
      sleep: async () => false,
      onRetry: (err) => { retries.push(err) }
    })
    if (retries.length > 0) throw new Error(`retried: ${String(retries[0])}`)
    if (result.outcome === 'dlq') {
      if (dead.length !== 1 || dead[0] !== result.reason) throw new Error('dead-lettered without its reason')
    } else if (result.outcome !== 'delivered' || dead.length > 0) {
      throw new Error(`outcome ${result.outcome}`)
    }
  }), { numRuns: NUM_RUNS })
  t.pass('settled')
})
