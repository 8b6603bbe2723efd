import t, { type Test } from 'tap'
import { FlakyBroker } from '../support/flaky-broker.js'
import { adminToken, token, WsClient } from '../support/helper.js'
import { gateway, type KafkaFixture, kafkaFixture, metricsText, sample, useKafka, waitForMetric } from '../support/kafka-fixture.js'

/**
 * The batch path of the Kafka ingest (lib/ingress/kafka-ingest.ts) against a real Kafka:
 * the messages are produced before the gateway starts, so they reach it as large batches
 * (several publish calls each: the test broker, like Redis, takes 500 events a call) on several partitions
 * handled side by side. What arrived is read back through history (`since` offset 0).
 */
const HISTORY = { HISTORY_SIZE: 5000 }

/** `count` order.updated messages per partition, statuses s0, s1, … per buyer u<partition>. */
function orders (partitions: number, count: number): Array<{ value: unknown, partition: number, key: string }> {
  const messages = []
  for (let n = 0; n < count; n++) {
    for (let p = 0; p < partitions; p++) messages.push({ value: { orderId: `o${p}`, buyerId: `u${p}`, status: `s${n}` }, partition: p, key: `o${p}` })
  }
  return messages
}

interface OrderEvent { channel: string, offset: number, payload: { userId: string, status: string } }

/** Every event of `channels` so far, replayed from the start of their history. */
async function replay (t: Test, wsUrl: string, bearer: string, channels: string[]): Promise<OrderEvent[]> {
  const client = await WsClient.connect(t, wsUrl, bearer)
  const answer = await client.subscribe(channels, Object.fromEntries(channels.map((c) => [c, { offset: 0 }])))
  t.same(answer.payload.recovered, Object.fromEntries(channels.map((c) => [c, true])), 'history holds every event')
  await client.request({ type: 'system:ping' }) // the replay came before the pong
  return client.events() as OrderEvent[]
}

const consecutive = (events: OrderEvent[]) => events.every((e, i) => e.offset === i + 1)

/** Statuses per buyer, in the order a channel carried them. */
function statusesByBuyer (events: Array<{ payload: { userId: string, status: string } }>): Record<string, string[]> {
  const out: Record<string, string[]> = {}
  for (const e of events) (out[e.payload.userId] ??= []).push(e.payload.status)
  return out
}

const sequence = (count: number) => Array.from({ length: count }, (_, n) => `s${n}`)

async function produceAll (kafka: KafkaFixture, messages: Array<{ value: unknown, partition: number, key: string }>): Promise<void> {
  for (let i = 0; i < messages.length; i += 500) await kafka.produceMany('order.updated', messages.slice(i, i + 500))
}

t.test('per-channel order holds across large batches of several partitions handled side by side', async (t) => {
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t, 3)
  const perPartition = 300 // 900 events a partition: two publish calls per batch at least
  await produceAll(kafka, orders(3, perPartition))
  const { url, wsUrl } = await gateway(t, kafka, HISTORY, (deliver) => new FlakyBroker(deliver, { down: false, historySize: HISTORY.HISTORY_SIZE }))
  await waitForMetric(url, 'gateway_kafka_messages_total', { topic: `${kafka.prefix}order.updated`, outcome: 'delivered' }, 3 * perPartition, 30_000)

  const frames = await replay(t, wsUrl, adminToken(), ['orders', 'admin'])
  for (const channel of ['orders', 'admin']) {
    const events = frames.filter((f) => f.channel === channel)
    t.equal(events.length, 3 * perPartition, `${channel}: every event once`)
    t.ok(consecutive(events), `${channel}: offsets 1, 2, 3, …`)
    const byBuyer = statusesByBuyer(events)
    for (let p = 0; p < 3; p++) t.same(byBuyer[`u${p}`], sequence(perPartition), `${channel}: partition ${p}'s events in its order`)
  }
  const buyer = await replay(t, wsUrl, token('u1'), ['user:u1'])
  t.same(buyer.map((f) => f.payload.status), sequence(perPartition), 'a buyer gets its partition\'s events in order')
  t.equal(sample(await metricsText(url), 'gateway_kafka_messages_total', { topic: `${kafka.prefix}order.updated`, outcome: 'retried' }), 0)
})

t.test('a broker failure in the middle of a batch: retried in place, nothing lost, nothing reordered, nothing twice', async (t) => {
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t, 1)
  const count = 400 // 1200 events: publish calls of 498, 498 and 204
  await produceAll(kafka, orders(1, count))
  let broker: FlakyBroker | undefined
  const { url, wsUrl } = await gateway(t, kafka, HISTORY, (deliver) => {
    broker = new FlakyBroker(deliver, { down: false, historySize: HISTORY.HISTORY_SIZE })
    broker.downAfter(700) // the first call passes, the second is refused
    return broker
  })
  const topic = `${kafka.prefix}order.updated`
  await waitForMetric(url, 'gateway_kafka_messages_total', { topic, outcome: 'retried' }, 2, 30_000)
  t.equal(broker!.accepted, 498, 'the batch stopped at the refused call')
  t.equal(sample(await metricsText(url), 'gateway_kafka_messages_total', { topic, outcome: 'delivered' }), 166, 'the messages before it were delivered')
  broker!.up()

  await waitForMetric(url, 'gateway_kafka_messages_total', { topic, outcome: 'delivered' }, count, 30_000)
  const frames = await replay(t, wsUrl, adminToken(), ['orders'])
  t.same(frames.map((f) => f.payload.status), sequence(count), 'every status once, in order')
  t.ok(consecutive(frames), 'offsets 1, 2, 3, …')
  t.equal(broker!.accepted, 3 * count, 'no event published twice')
  t.equal(sample(await metricsText(url), 'gateway_kafka_messages_total', { topic, outcome: 'dlq' }), 0, 'never dead-lettered')
})

t.test('nothing past an unfinished message is committed; the next instance resumes exactly there', async (t) => {
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t, 1)
  const count = 400
  await produceAll(kafka, orders(1, count))
  let broker: FlakyBroker | undefined
  const first = await gateway(t, kafka, HISTORY, (deliver) => {
    broker = new FlakyBroker(deliver, { down: false, historySize: HISTORY.HISTORY_SIZE })
    broker.downAfter(700) // stays down: messages 166… are never handed over
    return broker
  })
  await waitForMetric(first.url, 'gateway_kafka_messages_total', { topic: `${kafka.prefix}order.updated`, outcome: 'retried' }, 2, 30_000)
  const handedOver = broker!.accepted / 3
  await first.app.close()

  const committed = await kafka.committedOffset('order.updated', 0)
  t.ok(committed <= handedOver, `committed ${committed}, not past the ${handedOver} messages handed over`)
  t.ok(committed > 0, 'what was handed over was committed')

  const second = await gateway(t, kafka, HISTORY)
  await waitForMetric(second.url, 'gateway_kafka_messages_total', { topic: `${kafka.prefix}order.updated`, outcome: 'delivered' }, count - committed, 30_000)
  const frames = await replay(t, second.wsUrl, adminToken(), ['orders'])
  t.same(frames.map((f) => f.payload.status), sequence(count).slice(committed), 'the next instance starts at the first message not committed')
})
