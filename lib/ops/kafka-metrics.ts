import client from 'prom-client'
import { boundedLabel, seriesPerLabel } from './metrics.js'
import { talliedCounter, TalliedHistogram } from './tallied-metrics.js'

/** Order statuses are free text; past this many distinct ones they count as "other". */
const MAX_STATUS_LABELS = 50

/**
 * The Kafka consumer's Prometheus metrics, on the app's registry (see metrics.ts).
 * Topic labels are the real topic names, a fixed set (docs/protocol.md, Kafka plus prefix).
 */
export function createKafkaMetrics (registry: client.Registry) {
  const registers = [registry]

  // Counted per message: tallied (lib/ops/tallied-metrics.ts).
  const messages = talliedCounter({
    name: 'gateway_kafka_messages_total',
    help: 'Kafka messages by topic and outcome: delivered (events handed to the broker), dlq (poison, dead-lettered), retried (a transient failure, tried again)',
    labelNames: ['topic', 'outcome'],
    registers
  })
  const lag = new client.Gauge({
    name: 'gateway_kafka_consumer_lag',
    help: 'Messages behind the partition\'s high watermark, as of the last message this instance handled there',
    labelNames: ['topic', 'partition'],
    registers
  })
  const latency = new TalliedHistogram({
    name: 'order_processing_latency_seconds',
    help: 'Kafka message timestamp (event time) to its events being handed to the broker',
    labelNames: ['topic'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers
  })
  const orders = talliedCounter({
    name: 'orders_total', help: 'Order events consumed from Kafka, by status', labelNames: ['status'], registers
  })

  /** The orders counter bound per status: a label lookup per order message otherwise. */
  const ordersOf = seriesPerLabel((status) => orders.series({ status }), boundedLabel(MAX_STATUS_LABELS))

  /**
   * One topic's series, bound once (the topics are a fixed set): counting a message is
   * then no label lookup, which at a backlog's rate of messages is worth having.
   */
  const perTopic = new Map<string, TopicMetrics>()
  function topicMetrics (topic: string): TopicMetrics {
    let bound = perTopic.get(topic)
    if (bound === undefined) {
      const delivered = messages.series({ topic, outcome: 'delivered' })
      const dlq = messages.series({ topic, outcome: 'dlq' })
      const retried = messages.series({ topic, outcome: 'retried' })
      const topicLatency = latency.series({ topic })
      bound = {
        delivered (timestampMs: number, orderStatus: string | undefined): void {
          delivered.inc()
          if (Number.isFinite(timestampMs) && timestampMs > 0) topicLatency.observe(Math.max(0, Date.now() - timestampMs) / 1000)
          if (orderStatus !== undefined) ordersOf(orderStatus).inc()
        },
        deadLettered: () => dlq.inc(),
        retried: () => retried.inc()
      }
      perTopic.set(topic, bound)
    }
    return bound
  }

  return {
    topic: topicMetrics,
    delivered: (topic: string, timestampMs: number, orderStatus: string | undefined) => topicMetrics(topic).delivered(timestampMs, orderStatus),
    deadLettered: (topic: string) => topicMetrics(topic).deadLettered(),
    retried: (topic: string) => topicMetrics(topic).retried(),
    lag: (topic: string, partition: number, value: number) => lag.set({ topic, partition: String(partition) }, Math.max(0, value)),
    /** After a rebalance the partitions may have moved: series reappear with their next batch. */
    resetLag: () => lag.reset()
  }
}

export interface TopicMetrics {
  /** A message's events were handed to the broker; `timestampMs` is the Kafka message's. */
  delivered(timestampMs: number, orderStatus: string | undefined): void
  deadLettered(): void
  retried(): void
}

export type KafkaMetrics = ReturnType<typeof createKafkaMetrics>
