import t from 'tap'
import { BrokerUnavailableError } from '../../lib/broker/broker.js'
import type { EventDraft } from '../../lib/core/event.js'
import { backoffDelay, DLQ_HEADERS, type IngestContext, ingestMessage, type SourceMessage } from '../../lib/ingress/kafka-ingest.js'
import { KAFKA_TOPICS, type KafkaTopic, mapKafkaMessage, type MappingResult, topicNames } from '../../lib/ingress/kafka-mapping.js'

const options = { lowStockThreshold: 5 }
const map = (topic: KafkaTopic, value: unknown): MappingResult =>
  mapKafkaMessage(topic, typeof value === 'string' ? Buffer.from(value) : Buffer.from(JSON.stringify(value)), options)
const routes = (result: MappingResult) => result.ok ? result.drafts.map((d) => `${d.channel} ${d.type}`) : result.reason
const reason = (result: MappingResult) => result.ok ? 'delivered' : result.reason

t.test('topic names carry the prefix and map back to docs/protocol.md, Kafka', async (t) => {
  const names = topicNames('staging.')
  t.equal(names.size, 8)
  t.equal(names.get('staging.order.created'), 'order.created')
  t.equal(names.get('staging.realtime.publish'), 'realtime.publish')
  t.same([...topicNames('').values()], [...KAFKA_TOPICS])
})

t.test('each topic maps to the channels of docs/protocol.md, Kafka', async (t) => {
  t.same(routes(map('order.created', { orderId: 'o1', buyerId: 'u1', total: 5 })),
    ['user:u1 order:created', 'admin admin:order:created', 'orders admin:order:created'])
  t.same(routes(map('order.created', { orderId: 1, userId: 7 })),
    ['user:7 order:created', 'admin admin:order:created', 'orders admin:order:created'], 'userId stands in for buyerId')
  t.same(routes(map('order.updated', { orderId: 'o1', buyerId: 'u1', status: 'shipped' })),
    ['user:u1 order:updated', 'admin admin:order:updated', 'orders admin:order:updated'])
  t.same(routes(map('order.cancelled', { orderId: 'o1', buyerId: 'u1' })),
    ['user:u1 order:cancelled', 'admin admin:order:cancelled', 'orders admin:order:cancelled'])
  t.same(routes(map('inventory.updated', { productId: 'p1', stock: 50 })),
    ['product:p1 inventory:updated', 'inventory inventory:updated', 'admin admin:inventory:updated'])
  t.same(routes(map('inventory.updated', { productId: 'p1', stock: 5, previousStock: 6 })),
    ['product:p1 inventory:updated', 'inventory inventory:updated', 'admin admin:inventory:updated', 'admin admin:alert'])
  t.same(routes(map('product.created', { productId: 'p1', name: 'Lamp' })), ['products product:created', 'product:p1 product:created'])
  t.same(routes(map('product.updated', { productId: 'p1', price: 3 })), ['products product:updated', 'product:p1 product:updated'])
  t.same(routes(map('notification.created', { userId: 'u1', message: 'hi' })), ['user:u1 notification'])
  t.same(routes(map('realtime.publish', { channel: 'room:a', type: 't', payload: {} })), ['room:a t'])
  t.same(routes(map('realtime.publish', { channels: ['room:a', 'event:b'], type: 't', payload: {} })), ['room:a t', 'event:b t'])
  t.same(routes(map('realtime.publish', { userIds: ['1', '2'], payload: {} })), ['user:1 notification', 'user:2 notification'])
})

t.test('the payload is the fact, with the buyer as userId; orders report their status', async (t) => {
  const created = map('order.created', { orderId: 'o1', buyerId: 'u1', items: [{ sku: 'a' }] })
  t.ok(created.ok)
  if (!created.ok) return
  t.same(created.drafts[0].payload, { orderId: 'o1', userId: 'u1', items: [{ sku: 'a' }] })
  t.equal(created.orderStatus, 'created')
  const updated = map('order.updated', { orderId: 'o1', buyerId: 'u1', status: 'paid' })
  t.equal(updated.ok && updated.orderStatus, 'paid')
  const cancelled = map('order.cancelled', { orderId: 'o1', buyerId: 'u1' })
  t.equal(cancelled.ok && cancelled.orderStatus, 'cancelled')
  const product = map('product.created', { productId: 'p1' })
  t.equal(product.ok && product.orderStatus, undefined)
})

t.test('poison gets a precise reason, never an exception', async (t) => {
  t.match(reason(map('order.created', '{"orderId":')), /^invalid_json: /)
  t.equal(reason(mapKafkaMessage('order.created', null, options)), 'invalid_json: empty message value')
  t.equal(reason(mapKafkaMessage('order.created', Buffer.alloc(0), options)), 'invalid_json: empty message value')
  const badUtf8 = Buffer.concat([Buffer.from('{"productId":"p0","name":"'), Buffer.from([0xff, 0xc3, 0x28]), Buffer.from('"}')])
  t.equal(reason(mapKafkaMessage('product.updated', badUtf8, options)), 'invalid_json: the value is not valid UTF-8', 'not changed into U+FFFD and delivered')
  t.equal(reason(map('order.created', '42')), 'schema_violation: (value): must be a JSON object (got a number)')
  t.equal(reason(map('order.created', 'null')), 'schema_violation: (value): must be a JSON object (got null)')
  t.equal(reason(map('order.created', { orderId: 'o1' })), 'missing_field: buyerId: buyerId (or userId) is required')
  t.equal(reason(map('order.created', { buyerId: 'u1' })), 'schema_violation: orderId: is required')
  t.match(reason(map('order.updated', { orderId: 'o1', buyerId: 'u1' })), /^schema_violation: status: /)
  t.match(reason(map('order.created', { orderId: 'o1', buyerId: 'u 1' })), /^schema_violation: buyerId: .*\(got "u 1"\)/)
  t.match(reason(map('inventory.updated', { productId: 'p1', stock: 1.5 })), /^schema_violation: stock: .*\(got 1.5\)/)
  t.match(reason(map('notification.created', { userId: 'u1' })), /^schema_violation: message: /)
  t.match(reason(map('realtime.publish', { type: 't', payload: {} })), /^missing_field: channel: one of channel, channels, userId or userIds/)
  t.equal(reason(map('realtime.publish', { channel: 'a', channels: ['b'], type: 't', payload: {} })),
    'schema_violation: (value): give exactly one of channel, channels or userId/userIds (got channel, channels)')
  t.match(reason(map('realtime.publish', { channel: 'a b', type: 't', payload: {} })), /^schema_violation: channel: /)
  t.match(reason(map('realtime.publish', { channels: [], type: 't', payload: {} })), /^schema_violation: channels: /)
  t.match(reason(map('realtime.publish', { channel: 'a', type: 't', payload: [1] })), /^schema_violation: payload: /)
  t.match(reason(map('product.updated', { productId: 'p1', price: 'x'.repeat(500) })), /…\)$/, 'long values are cut short')
})

t.test('a prototype key is poison, as over HTTP: it would have vanished from the order\'s payload', async (t) => {
  const refused = /^invalid_json: a key named "__proto__", or a "constructor" key holding "prototype", is not accepted/
  t.match(reason(map('order.created', '{"orderId":"o1","buyerId":"u1","__proto__":{"admin":true}}')), refused)
  t.match(reason(map('order.created', '{"orderId":"o1","buyerId":"u1","items":[{"\\u005f_proto__":{}}]}')), refused, 'escaped, nested in an array')
  t.match(reason(map('realtime.publish', '{"channel":"room:a","type":"t","payload":{"constructor":{"prototype":{"x":1}}}}')), refused)
  // Such words as values, or a constructor without prototype, are fields like any other.
  const ok = map('order.created', '{"orderId":"o1","buyerId":"u1","note":"__proto__","constructor":"c"}')
  t.ok(ok.ok)
  t.same(ok.ok ? ok.drafts[0].payload : undefined, { orderId: 'o1', note: '__proto__', constructor: 'c', userId: 'u1' })
  t.match(reason(map('order.created', '\ufeff{"orderId":"o1","buyerId":"u1"}')), 'delivered', 'a leading BOM is skipped, as Fastify skips it')
})

t.test('a number beyond ±1.8e308 is poison, as over HTTP: it would have reached subscribers as null', async (t) => {
  t.match(reason(map('product.updated', '{"productId":"p1","price":1e999}')), /^invalid_json: price: a number beyond/)
  t.match(reason(map('realtime.publish', '{"channel":"room:a","type":"t","payload":{"a":[0,-1e309]}}')), /^invalid_json: payload\.a\.1: a number beyond/)
  t.match(reason(map('product.updated', '{"productId":"p1","price":1e308}')), 'delivered')
})

t.test('backoff grows exponentially up to its cap, with jitter', async (t) => {
  for (let i = 0; i < 50; i++) {
    const first = backoffDelay(1)
    t.ok(first >= 160 && first <= 240, `first ${first}`)
    const late = backoffDelay(30)
    t.ok(late >= 4000 && late <= 6000, `capped ${late}`)
  }
  t.ok(backoffDelay(3, { initialMs: 10, maxMs: 1000 }) >= 32)
})

function context (overrides: Partial<IngestContext>): IngestContext & { published: EventDraft[][], dead: Array<Record<string, unknown>>, retries: number[] } {
  const published: EventDraft[][] = []
  const dead: Array<Record<string, unknown>> = []
  const retries: number[] = []
  return {
    mapping: options,
    publish: async (drafts) => { published.push(drafts) },
    deadLetter: async (_message, headers) => { dead.push(headers) },
    sleep: async () => true,
    onRetry: (_err, attempt) => { retries.push(attempt) },
    ...overrides,
    published,
    dead,
    retries
  }
}

const message = (value: string, headers = {}): SourceMessage =>
  ({ topic: 'p.order.updated', partition: 2, offset: '41', key: Buffer.from('k'), value: Buffer.from(value), headers })

t.test('a transient failure is retried until it succeeds; never dead-lettered', async (t) => {
  let failures = 3
  const ctx = context({
    publish: async () => { if (failures-- > 0) throw new BrokerUnavailableError('redis down') }
  })
  const result = await ingestMessage('order.updated', message('{"orderId":"o","buyerId":"u","status":"paid"}'), ctx)
  t.same(result, { outcome: 'delivered', events: 3, orderStatus: 'paid' })
  t.same(ctx.retries, [1, 2, 3])
  t.same(ctx.dead, [])
})

t.test('stopping during a retry gives up without an outcome to commit', async (t) => {
  const ctx = context({ publish: async () => { throw new BrokerUnavailableError('redis down') }, sleep: async () => false })
  t.same(await ingestMessage('order.updated', message('{"orderId":"o","buyerId":"u","status":"paid"}'), ctx), { outcome: 'stopped' })
  t.same(ctx.dead, [])
})

t.test('poison is dead-lettered with its own headers plus the source and reason; the DLQ send is retried', async (t) => {
  let failures = 1
  const dead: Array<Record<string, unknown>> = []
  const ctx = context({
    deadLetter: async (_m, headers) => { if (failures-- > 0) throw new Error('kafka down'); dead.push(headers) }
  })
  const result = await ingestMessage('order.updated', message('nope', { 'trace-id': 'x' }), ctx)
  t.match(result, { outcome: 'dlq', reason: /^invalid_json: / })
  t.same(ctx.published, [])
  t.same(ctx.retries, [1])
  t.match(dead, [{
    'trace-id': 'x',
    [DLQ_HEADERS.topic]: 'p.order.updated',
    [DLQ_HEADERS.partition]: '2',
    [DLQ_HEADERS.offset]: '41',
    [DLQ_HEADERS.reason]: /^invalid_json: /,
    [DLQ_HEADERS.failedAt]: /^\d{4}-\d\d-\d\dT/
  }])
})

t.test('the publish limits make a message poison: too deep, too large, a reserved type (DLQ, never retried)', async (t) => {
  const deep = '{"channel":"room:a","type":"t","payload":' + '{"a":'.repeat(5000) + '{}' + '}'.repeat(5000) + '}'
  t.match(reason(mapKafkaMessage('realtime.publish', Buffer.from(deep), options)), /^too_deep: payload\.a: nested deeper than 64 levels/)
  const deepFact = '{"productId":"p1","stock":1,"meta":' + '{"a":'.repeat(70) + '{}' + '}'.repeat(70) + '}'
  t.match(reason(mapKafkaMessage('inventory.updated', Buffer.from(deepFact), options)), /^too_deep: meta: nested deeper/)
  const limits = { eventMaxBytes: 1024, publishMaxBytes: 2048 }
  const big = { channel: 'room:a', type: 't', payload: { text: 'x'.repeat(2000) } }
  t.match(reason(mapKafkaMessage('realtime.publish', Buffer.from(JSON.stringify(big)), { ...options, limits })), /^too_large: payload: \d+ bytes/)
  const wide = { channels: ['room:a', 'room:b', 'room:c'], type: 't', payload: { text: 'x'.repeat(800) } }
  t.match(reason(mapKafkaMessage('realtime.publish', Buffer.from(JSON.stringify(wide)), { ...options, limits })), /^too_large: .*PUBLISH_MAX_BYTES/)
  t.match(reason(map('realtime.publish', { channel: 'room:a', type: 'system:reset', payload: {} })), /^reserved_type: type: /)
  t.match(reason(map('notification.created', '{"userId":12345678901234567890,"message":"hi"}')), /^schema_violation: userId/,
    'an id beyond 2^53 cannot be carried exactly')
  t.equal(reason(map('realtime.publish', { channel: 'room:a', type: 't', payload: { ok: true } })), 'delivered')
})

t.test('a deeply nested value in a field that fails its schema is poison with a reason, not a throw (found by the property test)', async (t) => {
  const deep = '['.repeat(20_000) + ']'.repeat(20_000)
  t.match(reason(map('order.updated', `{"orderId":"o1","buyerId":"u1","status":${deep}}`)),
    /^schema_violation: status: .*\(got an array nested too deep to show\)/)
  t.match(reason(map('realtime.publish', `{"channel":{"a":${deep}},"type":"t","payload":{}}`)),
    /^schema_violation: channel: .*\(got an object nested too deep to show\)/)
  const dead: string[] = []
  const result = await ingestMessage('order.updated', {
    topic: 'p.order.updated', partition: 0, offset: '7', key: null, value: Buffer.from(`{"orderId":"o1","buyerId":"u1","status":${deep}}`)
  }, {
    mapping: options,
    publish: async () => { throw new Error('poison must not be published') },
    deadLetter: async (m) => { dead.push(m.offset) },
    sleep: async () => false,
    onRetry: () => { throw new Error('poison must not be retried') }
  })
  t.match(result, { outcome: 'dlq', reason: /^schema_violation: status: / })
  t.same(dead, ['7'])
})
