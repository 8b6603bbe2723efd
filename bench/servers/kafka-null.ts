import { KAFKA_TOPICS } from '../../lib/ingress/kafka-mapping.js'
import { now } from '../lib/clock.js'
import { notify, serve } from '../lib/ipc.js'
import { kafkaClient } from '../lib/kafka-topics.js'

/**
 * The limit the gateway's Kafka ingest is measured against: a kafkajs consumer in a fresh
 * group that does nothing with the messages (eachBatch counts them; offsets are resolved
 * and committed by kafkajs as usual). It reads with the same consumer settings as the
 * gateway, so the ratio is the cost of what the gateway does with a message, not of a
 * different fetch configuration.
 */
interface DrainRequest {
  prefix: string
  groupId: string
  /** Messages to wait for. */
  expected: number
  timeoutMs: number
  consumer: { maxWaitTimeInMs: number, maxBytesPerPartition?: number, maxBytes?: number }
  partitionsConsumedConcurrently: number
}

serve({
  drain: async (request) => {
    const r = request as unknown as DrainRequest
    const consumer = kafkaClient(`rtg-bench-null-${process.pid}`).consumer({ groupId: r.groupId, ...r.consumer })
    let count = 0
    let firstAt = 0
    let lastAt = 0
    const started = now()
    try {
      await consumer.connect()
      await consumer.subscribe({ topics: KAFKA_TOPICS.map((t) => `${r.prefix}${t}`), fromBeginning: true })
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, r.timeoutMs)
        void consumer.run({
          partitionsConsumedConcurrently: r.partitionsConsumedConcurrently,
          eachBatch: async ({ batch }) => {
            if (firstAt === 0) firstAt = now()
            count += batch.messages.length
            lastAt = now()
            if (count >= r.expected) {
              clearTimeout(timer)
              resolve()
            }
          }
        })
      })
    } finally {
      await consumer.disconnect().catch(() => {})
    }
    return { count, firstAt, lastAt, started }
  }
})
notify({ op: 'ready', port: 0 })
