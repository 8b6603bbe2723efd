import type { Consumer } from 'kafkajs'
import { KAFKA_TOPICS } from '../../lib/ingress/kafka-mapping.js'
import { now } from '../lib/clock.js'
import { Histogram } from '../lib/histogram.js'
import { notify, serve } from '../lib/ipc.js'
import { kafkaClient } from '../lib/kafka-topics.js'

/**
 * The limit the gateway's Kafka ingest is measured against: a kafkajs consumer in a fresh
 * group that does nothing with the messages (eachBatch counts them; offsets are resolved
 * and committed by kafkajs as usual). It reads with the same consumer settings as the
 * gateway, so the ratio is the cost of what the gateway does with a message, not of a
 * different fetch configuration.
 *
 * It also gives the latency floor: the same consumer's produce-to-read time at the steady
 * rate (`listen`, then `arm` before the timed part, then `stop`), each message's `sentAt`
 * against the time its batch reached eachBatch, as the gateway's clients time theirs.
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

interface ListenRequest {
  prefix: string
  groupId: string
  consumer: DrainRequest['consumer']
  partitionsConsumedConcurrently: number
}

const SENT_AT = '"sentAt":'
let listening: Consumer | undefined
let histogram = new Histogram()
let armed = false

serve({
  /** Joins a fresh group on the topics (resolves once it has joined) and times what it reads. */
  listen: async (request) => {
    const r = request as unknown as ListenRequest
    const consumer = listening = kafkaClient(`rtg-bench-null-${process.pid}`).consumer({ groupId: r.groupId, ...r.consumer })
    await consumer.connect()
    await consumer.subscribe({ topics: KAFKA_TOPICS.map((t) => `${r.prefix}${t}`), fromBeginning: true })
    const joined = new Promise<void>((resolve) => { consumer.on(consumer.events.GROUP_JOIN, () => resolve()) })
    await consumer.run({
      partitionsConsumedConcurrently: r.partitionsConsumedConcurrently,
      eachBatch: async ({ batch }) => {
        if (!armed) return
        const at = now()
        for (const message of batch.messages) {
          const text = message.value?.toString() ?? ''
          const i = text.indexOf(SENT_AT)
          if (i >= 0) histogram.record(at - parseFloat(text.slice(i + SENT_AT.length, i + SENT_AT.length + 30)))
        }
      }
    })
    await joined
    return {}
  },
  arm: async () => {
    histogram = new Histogram()
    armed = true
    return {}
  },
  count: async () => ({ count: histogram.count }),
  stop: async () => {
    armed = false
    await listening?.disconnect().catch(() => {})
    listening = undefined
    return { bins: histogram.sparse(), count: histogram.count }
  },
  drain: async (request) => {
    const r = request as unknown as DrainRequest
    const consumer = kafkaClient(`rtg-bench-null-${process.pid}`).consumer({ groupId: r.groupId, ...r.consumer })
    let count = 0
    let firstAt = 0
    let lastAt = 0
    let cpuAtFirst = 0
    let cpuAtLast = 0
    const cpu = () => { const u = process.cpuUsage(); return u.user + u.system }
    const started = now()
    try {
      await consumer.connect()
      await consumer.subscribe({ topics: KAFKA_TOPICS.map((t) => `${r.prefix}${t}`), fromBeginning: true })
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, r.timeoutMs)
        void consumer.run({
          partitionsConsumedConcurrently: r.partitionsConsumedConcurrently,
          eachBatch: async ({ batch }) => {
            if (firstAt === 0) { firstAt = now(); cpuAtFirst = cpu() }
            count += batch.messages.length
            lastAt = now()
            cpuAtLast = cpu()
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
    // CPU over the timed part (first batch to last), as µs: what fetching and decoding a message costs.
    return { count, firstAt, lastAt, started, cpuUs: cpuAtLast - cpuAtFirst }
  }
})
notify({ op: 'ready', port: 0 })
