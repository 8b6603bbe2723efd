import t from 'tap'
import { FlakyBroker } from '../support/flaky-broker.js'
import { adminToken, token, WsClient } from '../support/helper.js'
import { gateway, kafkaFixture, metricsText, sample, settled, useKafka, waitForMetric } from '../support/kafka-fixture.js'

t.test('a transient broker failure is retried with backoff, never dead-lettered, then delivered', async (t) => {
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t)
  let broker: FlakyBroker | undefined
  const { url, wsUrl } = await gateway(t, kafka, {}, (deliver) => (broker = new FlakyBroker(deliver)))
  const buyer = await WsClient.connect(t, wsUrl, token('u8'))

  await kafka.produce('order.updated', { orderId: 'o8', buyerId: 'u8', status: 'paid' })
  const topic = `${kafka.prefix}order.updated`
  await waitForMetric(url, 'gateway_kafka_messages_total', { topic, outcome: 'retried' }, 2)
  t.same(buyer.events(), [], 'nothing delivered while the broker is down')
  broker!.down = false

  t.equal((await buyer.next((f) => f.type === 'order:updated', 15_000)).payload.status, 'paid')
  const metrics = await metricsText(url)
  t.equal(sample(metrics, 'gateway_kafka_messages_total', { topic, outcome: 'delivered' }), 1)
  t.equal(sample(metrics, 'gateway_kafka_messages_total', { topic, outcome: 'dlq' }), 0)
  t.equal((await kafka.readDlq(1, 1500)).length, 0, 'the DLQ stays empty')
  t.same(await settled(buyer), [], 'delivered once')
})

t.test('a message still being retried at shutdown is not committed: the next instance delivers it', async (t) => {
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t)
  const first = await gateway(t, kafka, {}, (deliver) => new FlakyBroker(deliver))
  await kafka.produce('order.updated', { orderId: 'o9', buyerId: 'u9', status: 'stuck' })
  await waitForMetric(first.url, 'gateway_kafka_messages_total', { topic: `${kafka.prefix}order.updated`, outcome: 'retried' }, 1)
  await first.app.close()

  const second = await gateway(t, kafka)
  const admin = await WsClient.connect(t, second.wsUrl, adminToken())
  await admin.subscribe(['orders'], { orders: { offset: 0 } })
  t.equal((await admin.next((f) => f.channel === 'orders', 15_000)).payload.status, 'stuck')
})

t.test('messages produced while the gateway is down arrive when it is back; delivered ones are not replayed', async (t) => {
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t)
  const first = await gateway(t, kafka)
  const before = await WsClient.connect(t, first.wsUrl, adminToken())
  await before.subscribe(['orders'])
  await kafka.produce('order.updated', { orderId: 'o10', buyerId: 'u10', status: 'before' }, { key: 'o10' })
  t.equal((await before.next((f) => f.channel === 'orders', 15_000)).payload.status, 'before')
  await first.app.close()

  await kafka.produce('order.updated', { orderId: 'o10', buyerId: 'u10', status: 'while-down-1' }, { key: 'o10' })
  await kafka.produce('order.updated', { orderId: 'o10', buyerId: 'u10', status: 'while-down-2' }, { key: 'o10' })

  const second = await gateway(t, kafka)
  const admin = await WsClient.connect(t, second.wsUrl, adminToken())
  await admin.subscribe(['orders'], { orders: { offset: 0 } })
  t.equal((await admin.next((f) => f.channel === 'orders', 15_000)).payload.status, 'while-down-1')
  t.equal((await admin.next((f) => f.channel === 'orders', 15_000)).payload.status, 'while-down-2')
  await waitForMetric(second.url, 'gateway_kafka_messages_total', { topic: `${kafka.prefix}order.updated`, outcome: 'delivered' }, 2)
  t.same(await settled(admin), [], 'the message delivered before the stop was committed, not replayed')
})
