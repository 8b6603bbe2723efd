import t from 'tap'
import { FlakyBroker } from '../support/flaky-broker.js'
import { gateway, kafkaFixture, metricsText, sample, useKafka } from '../support/kafka-fixture.js'
import { eventually } from '../support/redis-fixture.js'

/**
 * gateway_kafka_consumer_lag on a real broker (lib/ingress/consumer-lag.ts). It was set only
 * when a batch ended, from that batch's own high watermark: a batch stuck retrying (its
 * broker down) never ended, and the gauge read 0 on every gateway while 12,604 messages
 * waited behind it (audit, session 29).
 */
t.test('messages piling up behind a batch that cannot be handed off show as lag, which falls to 0 once it is', async (t) => {
  if (!await useKafka(t)) return
  const kafka = await kafkaFixture(t, 1)
  let broker: FlakyBroker | undefined
  const gw = await gateway(t, kafka, { LOG_LEVEL: 'silent' }, (deliver) => (broker = new FlakyBroker(deliver, { down: true })))
  const labels = { topic: `${kafka.prefix}realtime.publish`, partition: '0' }
  const lag = async () => sample(await metricsText(gw.url), 'gateway_kafka_consumer_lag', labels)

  await kafka.produceMany('realtime.publish', Array.from({ length: 50 }, (_, n) => ({ value: { channel: 'room:lag', type: 't', payload: { n } } })))
  await eventually('the lag of the 50 messages waiting', async () => await lag() === 50, 30_000)
  t.ok((broker?.refused ?? 0) > 0, 'while their hand-off was being refused')

  await kafka.produceMany('realtime.publish', Array.from({ length: 25 }, (_, n) => ({ value: { channel: 'room:lag', type: 't', payload: { n: 50 + n } } })))
  await eventually('25 more behind them', async () => await lag() === 75, 30_000)

  broker?.up()
  await eventually('the lag gone once they are handed off', async () => await lag() === 0, 30_000)
  t.equal(broker?.accepted, 75, 'every message handed off')
})
