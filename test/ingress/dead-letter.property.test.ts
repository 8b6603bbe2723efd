import t from 'tap'
import fc from 'fast-check'
import { DLQ_OMITTED_HEADER, refusedAsTooLarge, standInRecord } from '../../lib/ingress/dead-letter.js'
import { DLQ_HEADERS, dlqHeaders, type Headers } from '../../lib/ingress/kafka-ingest.js'

/**
 * The DLQ stand-in (lib/ingress/dead-letter.ts) is what goes to the DLQ when Kafka refuses a
 * poison message's copy as too large, so it must fit whatever limit a DLQ topic has: whatever
 * the message (its key, value and headers come from any producer), the stand-in carries no
 * value, none of the message's own headers, a key of at most 1 KiB, and says what it left out.
 * The Kafka test (test/ingress/kafka.test.ts) sends one through a real broker.
 */
const bytes = (max: number) => fc.oneof(fc.constant(null), fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a)))
const header = fc.oneof(fc.string({ maxLength: 20 }), fc.uint8Array({ maxLength: 20 }).map((a) => Buffer.from(a)))
const message = fc.record({
  key: fc.oneof(bytes(64), fc.integer({ min: 1000, max: 1100 }).map((n) => Buffer.alloc(n, 'k'))),
  value: bytes(2048),
  headers: fc.option(fc.dictionary(fc.string({ minLength: 1, maxLength: 12 }), header, { maxKeys: 4 }), { nil: undefined })
})

const source = { topic: 'shop.order.created', partition: 3, offset: '12345' }

t.test('a stand-in carries the DLQ headers, a key of at most 1 KiB, no value and none of the message\'s own headers', async (t) => {
  fc.assert(fc.property(message, (m) => {
    const headers = dlqHeaders({ ...source, key: m.key, value: m.value, headers: m.headers as Headers | undefined }, 'invalid_json: x')
    const standIn = standInRecord(m, headers)
    const keyKept = m.key === null || m.key.length <= 1024
    const expectedHeaders = [...Object.values(DLQ_HEADERS), DLQ_OMITTED_HEADER].sort()
    const omitted = String(standIn.headers[DLQ_OMITTED_HEADER])
    return standIn.value === null &&
      (keyKept ? standIn.key === m.key : standIn.key === null) &&
      Object.keys(standIn.headers).sort().join() === expectedHeaders.join() &&
      Object.values(DLQ_HEADERS).every((name) => standIn.headers[name] === headers[name]) &&
      omitted.startsWith(`value (${m.value?.length ?? 0} bytes)`) &&
      omitted.includes('headers') === (Object.keys(m.headers ?? {}).length > 0) &&
      omitted.includes(`key (${m.key?.length ?? 0} bytes)`) === !keyKept
  }), { numRuns: 500 })
})

t.test('a key of 1024 bytes stays; one of 1025 is left out and named', async (t) => {
  const headers = dlqHeaders({ ...source, key: null, value: null }, 'too_large: x')
  t.equal(standInRecord({ key: Buffer.alloc(1024, 'a'), value: Buffer.alloc(10) }, headers).key?.length, 1024)
  const dropped = standInRecord({ key: Buffer.alloc(1025, 'a'), value: Buffer.alloc(10) }, headers)
  t.equal(dropped.key, null)
  t.equal(dropped.headers[DLQ_OMITTED_HEADER], 'value (10 bytes), key (1025 bytes): too large for the DLQ topic; read the original at its source offset')
})

t.test('Kafka\'s too-large refusals are told apart from other errors, however kafkajs wraps them', async (t) => {
  const tooLarge = { type: 'MESSAGE_TOO_LARGE', message: 'The request included a message larger than the max message size the server will accept' }
  t.ok(refusedAsTooLarge(tooLarge))
  t.ok(refusedAsTooLarge({ name: 'KafkaJSNumberOfRetriesExceeded', cause: { type: 'RECORD_LIST_TOO_LARGE' } }), 'under the retrier')
  t.ok(refusedAsTooLarge({ name: 'KafkaJSAggregateError', errors: [{ type: 'LEADER_NOT_AVAILABLE' }, tooLarge] }), 'in an aggregate')
  t.notOk(refusedAsTooLarge({ type: 'LEADER_NOT_AVAILABLE' }), 'a transient refusal is retried instead')
  t.notOk(refusedAsTooLarge(new Error('connection closed')))
  t.notOk(refusedAsTooLarge(null))
  // A cyclic error is not followed for ever.
  const cyclic: { cause?: unknown } = {}
  cyclic.cause = cyclic
  t.notOk(refusedAsTooLarge(cyclic))
})
