import { randomBytes } from 'node:crypto'
import t from 'tap'
import { adminToken, SseClient, token, WsClient } from '../support/helper.js'
import { gateway, kafkaFixture, metricsText, sample, settled, useKafka, waitForMetric } from '../support/kafka-fixture.js'

const pairs = (events: Array<{ channel: string, type: string }>) => events.map((e) => `${e.channel} ${e.type}`).sort()

t.test('every topic of docs/protocol.md, Kafka reaches its channels, and no others', async (t) => {
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t)
  const { url, wsUrl } = await gateway(t, kafka, { LOW_STOCK_THRESHOLD: 5 })

  const buyer = await WsClient.connect(t, wsUrl, token('u1'))
  const other = await WsClient.connect(t, wsUrl, token('u2'))
  const admin = await WsClient.connect(t, wsUrl, adminToken('a1'))
  t.match(await admin.subscribe(['admin', 'orders']), { type: 'subscribed' })
  const shopper = await WsClient.connect(t, wsUrl, token('u3'))
  t.match(await shopper.subscribe(['product:p1', 'products', 'inventory']), { type: 'subscribed' })
  const fan = await WsClient.connect(t, wsUrl, token('u4'))
  t.match(await fan.subscribe(['room:r1', 'event:e1']), { type: 'subscribed' })
  const sse = await SseClient.open(t, `${url}/sse?channels=product:p1&token=${token('u1')}`)
  await sse.waitFor(1, (e) => e.event === 'system:connected')

  await kafka.produce('order.created', { orderId: 'o1', buyerId: 'u1', total: 12.5, currency: 'EUR' })
  await kafka.produce('order.updated', { orderId: 'o1', buyerId: 'u1', status: 'paid', previousStatus: 'created' })
  await kafka.produce('order.cancelled', { orderId: 'o1', buyerId: 'u1', reason: 'changed mind' })
  await kafka.produce('inventory.updated', { productId: 'p1', stock: 3, previousStock: 10, sku: 'SKU-1' })
  await kafka.produce('product.created', { productId: 'p1', name: 'Lamp', price: 9.5 })
  await kafka.produce('product.updated', { productId: 'p1', price: 8 })
  await kafka.produce('notification.created', { userId: 'u1', title: 'Hi', message: 'hello' })
  await kafka.produce('realtime.publish', { channel: 'room:r1', type: 'room:message', payload: { text: 'one' } })
  await kafka.produce('realtime.publish', { channels: ['room:r1', 'event:e1'], type: 'score', payload: { home: 1 } })
  await kafka.produce('realtime.publish', { userId: 'u1', type: 'ping', payload: { n: 1 } })
  await kafka.produce('realtime.publish', { userIds: ['u1', 'u2'], payload: { text: 'to both' } })

  await waitForMetric(url, 'gateway_events_published_total', { source: 'kafka' }, 24)
  await sse.waitFor(9, (e) => e.event !== 'system:connected', 15_000)

  const buyerEvents = await settled(buyer)
  t.same(pairs(buyerEvents), pairs([
    { channel: 'user:u1', type: 'order:created' }, { channel: 'user:u1', type: 'order:updated' },
    { channel: 'user:u1', type: 'order:cancelled' }, { channel: 'user:u1', type: 'notification' },
    { channel: 'user:u1', type: 'ping' }, { channel: 'user:u1', type: 'notification' }
  ]), 'the buyer gets its orders, notification and direct messages')
  t.match(buyerEvents.find((e) => e.type === 'order:created')?.payload, { orderId: 'o1', userId: 'u1', total: 12.5, currency: 'EUR' })
  t.match(buyerEvents.find((e) => e.type === 'order:updated')?.payload, { status: 'paid', previousStatus: 'created' })
  t.match(buyerEvents.find((e) => e.type === 'notification' && e.payload.title !== undefined)?.payload, { title: 'Hi', message: 'hello' })

  t.same(pairs(await settled(other)), ['user:u2 notification'], 'the other user only gets what named it')

  t.same(pairs(await settled(admin)), pairs([
    ...['created', 'updated', 'cancelled'].flatMap((c) => [
      { channel: 'admin', type: `admin:order:${c}` }, { channel: 'orders', type: `admin:order:${c}` }
    ]),
    { channel: 'admin', type: 'admin:inventory:updated' }, { channel: 'admin', type: 'admin:alert' }
  ]))
  t.same(pairs(await settled(shopper)), pairs([
    { channel: 'product:p1', type: 'inventory:updated' }, { channel: 'inventory', type: 'inventory:updated' },
    { channel: 'product:p1', type: 'product:created' }, { channel: 'products', type: 'product:created' },
    { channel: 'product:p1', type: 'product:updated' }, { channel: 'products', type: 'product:updated' }
  ]))
  t.same(pairs(await settled(fan)), pairs([
    { channel: 'room:r1', type: 'room:message' }, { channel: 'room:r1', type: 'score' }, { channel: 'event:e1', type: 'score' }
  ]))

  const sseEvents = sse.events.filter((e) => e.event !== 'system:connected')
  t.same(pairs(sseEvents.map((e) => ({ channel: e.data.channel, type: e.event }))), pairs([
    ...buyerEvents,
    { channel: 'product:p1', type: 'inventory:updated' }, { channel: 'product:p1', type: 'product:created' },
    { channel: 'product:p1', type: 'product:updated' }
  ]), 'SSE carries the same events as the WebSocket')

  const metrics = await metricsText(url)
  t.equal(sample(metrics, 'gateway_kafka_messages_total', { topic: `${kafka.prefix}realtime.publish`, outcome: 'delivered' }), 4)
  t.equal(sample(metrics, 'gateway_kafka_messages_total', { topic: `${kafka.prefix}order.created`, outcome: 'delivered' }), 1)
  t.equal(sample(metrics, 'orders_total', { status: 'paid' }), 1)
  t.equal(sample(metrics, 'orders_total', { status: 'cancelled' }), 1)
  t.equal(sample(metrics, 'order_processing_latency_seconds_count', { topic: `${kafka.prefix}order.updated` }), 1)
  // Read from Kafka every 5 s (lib/ingress/consumer-lag.ts): the partitions of the topic, none behind.
  const lagLine = new RegExp(`gateway_kafka_consumer_lag\\{topic="${kafka.prefix.replace('.', '\\.')}order\\.created",partition="\\d"\\} (\\d+)`, 'g')
  let lags: string[] = []
  const deadline = Date.now() + 15_000
  while (lags.length === 0 && Date.now() < deadline) {
    lags = [...(await metricsText(url)).matchAll(lagLine)].map((m) => m[1])
    if (lags.length === 0) await new Promise((resolve) => setTimeout(resolve, 200))
  }
  t.ok(lags.length > 0, 'the lag of the topic\'s partitions is read')
  t.same(new Set(lags), new Set(['0']), 'none behind')
})

t.test('events of one partition keep their order on every channel', async (t) => {
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t)
  const { wsUrl } = await gateway(t, kafka)
  const buyer = await WsClient.connect(t, wsUrl, token('u5'))
  const admin = await WsClient.connect(t, wsUrl, adminToken('a5'))
  await admin.subscribe(['orders'])

  const statuses = Array.from({ length: 40 }, (_, i) => `s${i + 1}`)
  for (const status of statuses) await kafka.produce('order.updated', { orderId: 'o5', buyerId: 'u5', status }, { key: 'o5' })

  for (const status of statuses) {
    t.equal((await buyer.next((f) => f.type === 'order:updated', 15_000)).payload.status, status)
    t.equal((await admin.next((f) => f.channel === 'orders', 15_000)).payload.status, status)
  }
})

t.test('poison goes to the DLQ unchanged, with the reason; good messages around it still flow', async (t) => {
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t)
  const { url, wsUrl } = await gateway(t, kafka)
  const buyer = await WsClient.connect(t, wsUrl, token('u7'))

  const p0 = { partition: 0 }
  await kafka.produce('order.created', { orderId: 'g1', buyerId: 'u7' }, p0)
  await kafka.produce('order.created', '{"orderId": "o1", buyerId', { ...p0, key: 'k-bad', headers: { 'trace-id': 't-1' } })
  await kafka.produce('order.created', { orderId: 'o2' }, p0)
  await kafka.produce('order.created', { orderId: 'o3', buyerId: 'u7', total: 'ten' }, p0)
  await kafka.produce('order.created', '', p0)
  await kafka.produce('order.created', { orderId: 'g2', buyerId: 'u7' }, p0)
  await kafka.produce('realtime.publish', { channel: 'room:a', userId: 'u7', type: 'x', payload: {} }, p0)
  await kafka.produce('realtime.publish', { channel: 'bad channel!', type: 'x', payload: {} }, p0)
  await kafka.produce('inventory.updated', [1, 2], p0)

  t.equal((await buyer.next((f) => f.type === 'order:created', 15_000)).payload.orderId, 'g1')
  t.equal((await buyer.next((f) => f.type === 'order:created', 15_000)).payload.orderId, 'g2', 'the message after the poison still flows')

  const dlq = await kafka.readDlq(7)
  t.equal(dlq.length, 7, 'every poison message is dead-lettered')
  const header = (m: (typeof dlq)[number], name: string) => m.headers?.[name]?.toString()
  const from = (topic: string, offset: string) => dlq.find((m) =>
    header(m, 'x-dlq-source-topic') === `${kafka.prefix}${topic}` && header(m, 'x-dlq-source-offset') === offset)

  const notJson = from('order.created', '1')
  t.ok(notJson, 'the not-JSON message')
  t.equal(notJson?.value?.toString(), '{"orderId": "o1", buyerId', 'value unchanged')
  t.equal(notJson?.key?.toString(), 'k-bad', 'key unchanged')
  t.equal(header(notJson!, 'trace-id'), 't-1', 'its own headers kept')
  t.equal(header(notJson!, 'x-dlq-source-partition'), '0')
  t.match(header(notJson!, 'x-dlq-reason'), /^invalid_json: /)
  t.ok(!Number.isNaN(Date.parse(header(notJson!, 'x-dlq-failed-at') ?? '')))

  t.match(header(from('order.created', '2')!, 'x-dlq-reason'), /^missing_field: buyerId/)
  t.match(header(from('order.created', '3')!, 'x-dlq-reason'), /^schema_violation: total: .*"ten"/)
  t.equal(header(from('order.created', '4')!, 'x-dlq-reason'), 'invalid_json: empty message value')
  t.equal(from('order.created', '4')?.value?.length ?? 0, 0)
  t.match(header(from('realtime.publish', '0')!, 'x-dlq-reason'), /^schema_violation: .*exactly one of channel, channels or userId/)
  t.match(header(from('realtime.publish', '1')!, 'x-dlq-reason'), /^schema_violation: channel: /)
  t.match(header(from('inventory.updated', '0')!, 'x-dlq-reason'), /^schema_violation: \(value\): must be a JSON object \(got an array\)/)
  t.same(JSON.parse(from('inventory.updated', '0')!.value!.toString()), [1, 2])

  const metrics = await metricsText(url)
  t.equal(sample(metrics, 'gateway_kafka_messages_total', { topic: `${kafka.prefix}order.created`, outcome: 'dlq' }), 4)
  t.equal(sample(metrics, 'gateway_kafka_messages_total', { topic: `${kafka.prefix}order.created`, outcome: 'delivered' }), 2)
  t.equal(sample(metrics, 'gateway_kafka_messages_total', { topic: `${kafka.prefix}realtime.publish`, outcome: 'dlq' }), 2)
  t.same(buyer.events(), [], 'no event came of the poison')
})

t.test('poison too large for the DLQ as it came: sent compressed, or as a stand-in without its value; the partition flows on', async (t) => {
  // Audit: the DLQ copy (the value, plus the x-dlq-* headers, uncompressed) was over the
  // broker's 1 MiB message limit; Kafka refused it for good and the partition stalled behind it.
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t)
  const { wsUrl } = await gateway(t, kafka)
  const client = await WsClient.connect(t, wsUrl, token('k2'))
  await client.subscribe(['room:dlq-size'])

  const compressible = Buffer.alloc(3 * 1024 * 1024, 'not json ')
  await kafka.produce('realtime.publish', compressible, { partition: 0, compressed: true, key: 'k-big' })
  // Random bytes do not compress: just under the broker's limit as produced, over it with the DLQ headers.
  const incompressible = randomBytes(1_048_400)
  await kafka.produce('realtime.publish', incompressible, { partition: 0, key: 'k-huge', headers: { 'trace-id': 't-2' } })
  await kafka.produce('realtime.publish', { channel: 'room:dlq-size', type: 'after', payload: { ok: true } }, { partition: 0 })

  t.match(await client.next((f) => f.channel === 'room:dlq-size', 30_000), { type: 'after', offset: 1 }, 'the message behind both arrives')
  const dlq = await kafka.readDlq(2, 30_000)
  const at = (offset: string) => dlq.find((m) => m.headers?.['x-dlq-source-offset']?.toString() === offset)
  t.ok(at('0')?.value?.equals(compressible), 'the 3 MiB value went to the DLQ unchanged (compressed on the way)')
  t.equal(at('0')?.key?.toString(), 'k-big')
  const standIn = at('1')
  t.equal(standIn?.value, null, 'the value too large for the DLQ is left out')
  t.equal(standIn?.key?.toString(), 'k-huge', 'its key is kept')
  t.match(standIn?.headers?.['x-dlq-reason']?.toString(), /^invalid_json: /)
  t.equal(standIn?.headers?.['x-dlq-source-topic']?.toString(), `${kafka.prefix}realtime.publish`)
  t.match(standIn?.headers?.['x-dlq-omitted']?.toString(), /^value \(1048400 bytes\), headers: too large for the DLQ topic/)
  t.equal(standIn?.headers?.['trace-id'], undefined, 'its own headers are left out, as the note says')
})

t.test('payloads too deep, too large or of a reserved type go to the DLQ at once, and the partition flows on', async (t) => {
  // Issue 13: a payload nested thousands deep was retried forever (never dead-lettered),
  // stalling its partition; the publish limits were not checked on Kafka at all.
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t)
  const { url, wsUrl } = await gateway(t, kafka, { EVENT_MAX_BYTES: 1024, PUBLISH_MAX_BYTES: 4096 })
  const client = await WsClient.connect(t, wsUrl, token('k1'))
  await client.subscribe(['room:k'])

  const p0 = { partition: 0 }
  const deep = '{"a":'.repeat(4999) + '1' + '}'.repeat(4999)
  await kafka.produce('realtime.publish', `{"channel":"room:k","type":"t","payload":${deep}}`, p0)
  await kafka.produce('realtime.publish', { channel: 'room:k', type: 't', payload: { text: 'x'.repeat(2000) } }, p0)
  const channels = Array.from({ length: 20 }, (_, i) => `room:b${i}`)
  await kafka.produce('realtime.publish', { channels, type: 't', payload: { text: 'x'.repeat(500) } }, p0)
  await kafka.produce('realtime.publish', { channel: 'room:k', type: 'system:reset', payload: {} }, p0)
  await kafka.produce('realtime.publish', { channel: 'room:k', type: 'after', payload: { ok: true } }, p0)

  t.match(await client.next((f) => f.channel === 'room:k', 20_000), { type: 'after', offset: 1, payload: { ok: true } },
    'the message behind the poison arrives, and is the channel\'s first event')
  const dlq = await kafka.readDlq(4)
  const reasons = new Map(dlq.map((m) => [m.headers?.['x-dlq-source-offset']?.toString(), m.headers?.['x-dlq-reason']?.toString()]))
  t.match(reasons.get('0'), /^too_deep: payload\.a: nested deeper than 64 levels/)
  t.match(reasons.get('1'), /^too_large: payload: \d+ bytes .*EVENT_MAX_BYTES/)
  t.match(reasons.get('2'), /^too_large: .*PUBLISH_MAX_BYTES/)
  t.match(reasons.get('3'), /^reserved_type: type: /)
  t.equal(dlq.find((m) => m.headers?.['x-dlq-source-offset']?.toString() === '0')?.value?.length,
    Buffer.byteLength(`{"channel":"room:k","type":"t","payload":${deep}}`), 'dead-lettered unchanged')
  const metrics = await metricsText(url)
  t.equal(sample(metrics, 'gateway_kafka_messages_total', { topic: `${kafka.prefix}realtime.publish`, outcome: 'dlq' }), 4)
  t.equal(sample(metrics, 'gateway_kafka_messages_total', { topic: `${kafka.prefix}realtime.publish`, outcome: 'delivered' }), 1)
  t.same(client.events('room:k'), [], 'nothing else reached the channel')
})
