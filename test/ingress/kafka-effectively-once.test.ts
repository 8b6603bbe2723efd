import t, { type Test } from 'tap'
import { adminToken, requireService, token, WsClient } from '../support/helper.js'
import { gateway, kafkaFixture, type KafkaFixture, metricsText, sample, useKafka, waitForMetric } from '../support/kafka-fixture.js'
import { REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'

// Effectively once from Kafka (issue 15): a message read again — here every message, after
// the group's offsets were reset to the earliest — publishes nothing new.
const redisUp = await redisAvailable()

/** Kafka topics of the test's own and a gateway's settings on Redis under a prefix of its own; undefined when a service is missing (skipped, or failed under CI). */
async function kafkaOnRedis (t: Test, partitions: number, name: string): Promise<{ kafka: KafkaFixture, settings: Record<string, string | number> } | undefined> {
  if (!await useKafka(t)) return undefined
  if (!requireService(t, 'Redis', redisUp)) return undefined
  const kafka = await kafkaFixture(t, partitions)
  const prefix = uniquePrefix(name)
  await redisClient(t, prefix)
  return { kafka, settings: { REDIS_URL, REDIS_KEY_PREFIX: prefix, HISTORY_SIZE: 1000 } }
}

t.test('consume, stop, reset the group to the earliest offsets, start again: every channel holds each message once', async (t) => {
  const setup = await kafkaOnRedis(t, 3, 'eo')
  if (setup === undefined) return
  const { kafka, settings } = setup
  const count = 60
  await kafka.produceMany('order.updated', Array.from({ length: count }, (_, n) => ({
    value: { orderId: `o${n % 6}`, buyerId: `b${n % 6}`, status: `s${n}` }, partition: n % 3, key: `o${n % 6}`
  })))
  const delivered = { topic: `${kafka.prefix}order.updated`, outcome: 'delivered' }
  const first = await gateway(t, kafka, settings)
  await waitForMetric(first.url, 'gateway_kafka_messages_total', delivered, count, 30_000)
  await first.app.close()
  await kafka.resetToEarliest('order.updated')

  const second = await gateway(t, kafka, settings)
  await waitForMetric(second.url, 'gateway_kafka_messages_total', delivered, count, 30_000)
  t.equal(sample(await metricsText(second.url), 'gateway_idempotent_replays_total', { source: 'kafka' }), 3 * count,
    'every event of every message read again was recognised, none published')

  const admin = await WsClient.connect(t, second.wsUrl, adminToken())
  const ack = await admin.subscribe(['orders'], { orders: { offset: 0 } })
  t.same(ack.payload.recovered, { orders: true })
  t.equal(ack.payload.positions.orders.offset, count, 'orders: one offset per message, not two')
  await admin.request({ type: 'system:ping' })
  const statuses = admin.events('orders').map((e) => e.payload.status as string)
  t.same([...statuses].sort(), Array.from({ length: count }, (_, n) => `s${n}`).sort(), 'each message once')
  const buyer = await WsClient.connect(t, second.wsUrl, token('b1'))
  const mine = await buyer.subscribe(['user:b1'], { 'user:b1': { offset: 0 } })
  t.equal(mine.payload.positions['user:b1'].offset, count / 6, 'the buyer\'s channel too')
})

t.test('a topic deleted and created again within the idempotency TTL: its new messages are published, not taken for ones read before', async (t) => {
  const setup = await kafkaOnRedis(t, 2, 'eo-recreated')
  if (setup === undefined) return
  const { kafka, settings } = setup
  const message = (n: number) => ({ value: { orderId: 'o1', buyerId: 'b1', status: `s${n}` }, partition: n % 2, key: 'o1' })
  // The first log: 20 messages, offsets 0–9 on each partition; the marks stay at 9.
  await kafka.produceMany('order.updated', Array.from({ length: 20 }, (_, n) => message(n)))
  const delivered = { topic: `${kafka.prefix}order.updated`, outcome: 'delivered' }
  const first = await gateway(t, kafka, settings)
  await waitForMetric(first.url, 'gateway_kafka_messages_total', delivered, 20, 30_000)
  await first.app.close()

  // The new log's offsets 0–4 lie below those marks: before, all ten were skipped as read already.
  await kafka.recreate('order.updated')
  await kafka.produceMany('order.updated', Array.from({ length: 10 }, (_, n) => message(100 + n)))
  const second = await gateway(t, kafka, settings)
  await waitForMetric(second.url, 'gateway_kafka_messages_total', delivered, 10, 30_000)
  t.equal(sample(await metricsText(second.url), 'gateway_idempotent_replays_total', { source: 'kafka' }), 0, 'none of the new messages was taken for a repeat')
  const buyer = await WsClient.connect(t, second.wsUrl, token('b1'))
  const ack = await buyer.subscribe(['user:b1'], { 'user:b1': { offset: 0 } })
  t.equal(ack.payload.positions['user:b1'].offset, 30, 'the buyer\'s channel holds the 20 messages of the first log and the 10 of the new one')
  await buyer.request({ type: 'system:ping' })
  const statuses = buyer.events('user:b1').map((e) => e.payload.status as string)
  t.same(statuses.slice(20).sort(), Array.from({ length: 10 }, (_, n) => `s${100 + n}`).sort(), 'each new message once')
})
