import { randomBytes } from 'node:crypto'
import kafkajs, { type Admin, type IHeaders, type KafkaMessage } from 'kafkajs'
import type { Test } from 'tap'
import type { Broker, DeliverFn } from '../../lib/broker/broker.js'
import { KAFKA_TOPICS } from '../../lib/ingress/kafka-mapping.js'
import { requireService, type RunningServer, sleep, startServer, type WsClient } from './helper.js'
import { holdServiceLock } from './service-lock.js'

const { Kafka, logLevel, CompressionTypes } = kafkajs

/**
 * Real-Kafka test plumbing: every test gets its own topic prefix and group id, so
 * files (tap runs two at a time) and tests never read each other's messages.
 */
export const KAFKA_BROKERS = process.env.KAFKA_TEST_BROKERS ?? '127.0.0.1:9092'

const client = (clientId: string) => new Kafka({
  clientId,
  brokers: KAFKA_BROKERS.split(','),
  logLevel: logLevel.NOTHING,
  connectionTimeout: 2000,
  retry: { retries: 5, initialRetryTime: 200 }
})

export async function kafkaReachable (): Promise<boolean> {
  const admin = new Kafka({ clientId: 'probe', brokers: KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING, connectionTimeout: 2000, retry: { retries: 0 } }).admin()
  try {
    await admin.connect()
    await admin.listTopics()
    return true
  } catch {
    return false
  } finally {
    await admin.disconnect().catch(() => {})
  }
}

export interface ProduceOptions { key?: string, headers?: IHeaders, partition?: number, /** gzip, as a producer may send a large value */ compressed?: boolean }

export interface KafkaFixture {
  prefix: string
  groupId: string
  /** Gateway config overrides pointing at this fixture's topics and group. */
  env: Record<string, string>
  /** Produces one message to one of the gateway's topics (docs/protocol.md, Kafka) or the DLQ, prefixed; a non-string value is JSON-encoded. */
  produce: (topic: string, value: unknown, options?: ProduceOptions) => Promise<void>
  /** Produces many messages to one prefixed topic in one request, in the order given (per partition). */
  produceMany: (topic: string, messages: Array<{ value: unknown } & ProduceOptions>) => Promise<void>
  /** The offset the fixture's group (or `groupId`) committed for a partition: the next message it will read; -1 for none. */
  committedOffset: (topic: string, partition: number, groupId?: string) => Promise<number>
  /** Moves the group's committed offsets of a topic back to the earliest message (the group must be empty). */
  resetToEarliest: (topic: string, groupId?: string) => Promise<void>
  /** Deletes a topic and creates it again, empty, with the same partitions (nothing may consume it meanwhile). */
  recreate: (topic: string) => Promise<void>
  /** Reads the DLQ topic from the beginning until `count` messages came (bounded). */
  readDlq: (count: number, timeoutMs?: number) => Promise<Array<KafkaMessage & { partition: number }>>
  close: () => Promise<void>
}

/** Creates this fixture's topics up front (3 partitions, like the broker's default). */
export async function kafkaFixture (t: Test, partitions = 3): Promise<KafkaFixture> {
  const id = randomBytes(4).toString('hex')
  const prefix = `t${id}.`
  const groupId = `gw-test-${id}`
  const kafka = client(`test-${id}`)
  const admin = kafka.admin()
  // Idempotent: on a loaded machine a produce request can time out and be retried, and a
  // plain producer then writes its messages twice (a test counting events sees them twice).
  const newProducer = () => kafka.producer({ allowAutoTopicCreation: false, idempotent: true, maxInFlightRequests: 1 })
  let producer = newProducer()
  const names = [...KAFKA_TOPICS, 'realtime.dlq'].map((topic) => `${prefix}${topic}`)
  try {
    await admin.connect()
    await admin.createTopics({ waitForLeaders: false, topics: names.map((topic) => ({ topic, numPartitions: partitions })) })
    await untilLeaders(admin, names, partitions)
    await producer.connect()
  } catch (err) {
    // An open client would keep the test process alive until tap's timeout.
    await producer.disconnect().catch(() => {})
    await admin.deleteTopics({ topics: names, timeout: 5000 }).catch(() => {})
    await admin.disconnect().catch(() => {})
    throw err
  }
  const consumers: Array<{ disconnect: () => Promise<void> }> = []

  const fixture: KafkaFixture = {
    prefix,
    groupId,
    env: { KAFKA_BROKERS, KAFKA_TOPIC_PREFIX: prefix, KAFKA_GROUP_ID: groupId, SHUTDOWN_TIMEOUT_MS: 4000 } as unknown as Record<string, string>,
    async produce (topic, value, options = {}) {
      await producer.send({
        topic: `${prefix}${topic}`,
        compression: options.compressed === true ? CompressionTypes.GZIP : undefined,
        messages: [{
          key: options.key ?? null,
          value: typeof value === 'string' || Buffer.isBuffer(value) ? value : JSON.stringify(value),
          headers: options.headers,
          partition: options.partition
        }]
      })
    },
    async produceMany (topic, messages) {
      await producer.send({
        topic: `${prefix}${topic}`,
        messages: messages.map(({ value, key, headers, partition }) => ({
          key: key ?? null,
          value: typeof value === 'string' || Buffer.isBuffer(value) ? value : JSON.stringify(value),
          headers,
          partition
        }))
      })
    },
    async committedOffset (topic, partition, group = groupId) {
      const [offsets] = await admin.fetchOffsets({ groupId: group, topics: [`${prefix}${topic}`] })
      return Number(offsets?.partitions.find((p) => p.partition === partition)?.offset ?? -1)
    },
    async resetToEarliest (topic, group = groupId) {
      await admin.resetOffsets({ groupId: group, topic: `${prefix}${topic}`, earliest: true })
    },
    async recreate (topic) {
      const name = `${prefix}${topic}`
      await admin.deleteTopics({ topics: [name], timeout: 10_000 })
      // Deletion completes in the background: the name is taken until it has.
      const deadline = Date.now() + 30_000
      for (;;) {
        // False (or an error) while the old one is still there.
        const created = await admin.createTopics({ waitForLeaders: false, topics: [{ topic: name, numPartitions: partitions }] }).catch((err: unknown) => {
          if (Date.now() > deadline) throw err
          return false
        })
        if (created) break
        if (Date.now() > deadline) throw new Error(`${name} could not be created again within 30 s`)
        await sleep(200)
      }
      await untilLeaders(admin, [name], partitions)
      // An idempotent producer numbers its messages per partition: a new partition starts again.
      await producer.disconnect()
      producer = newProducer()
      await producer.connect()
    },
    async readDlq (count, timeoutMs = 15_000) {
      const consumer = kafka.consumer({ groupId: `${groupId}-dlq-reader-${randomBytes(3).toString('hex')}`, maxWaitTimeInMs: 500 })
      consumers.push(consumer)
      const received: Array<KafkaMessage & { partition: number }> = []
      await consumer.connect()
      await consumer.subscribe({ topic: `${prefix}realtime.dlq`, fromBeginning: true })
      await consumer.run({ eachMessage: async ({ message, partition }) => { received.push({ ...message, partition }) } })
      const deadline = Date.now() + timeoutMs
      while (received.length < count && Date.now() < deadline) await sleep(100)
      await consumer.disconnect()
      return received
    },
    async close () {
      await Promise.all(consumers.map(async (c) => await c.disconnect().catch(() => {})))
      await producer.disconnect().catch(() => {})
      await admin.deleteTopics({ topics: names, timeout: 5000 }).catch(() => {})
      await admin.disconnect().catch(() => {})
    }
  }
  t.teardown(fixture.close)
  return fixture
}

/** New topics answer UNKNOWN_TOPIC_OR_PARTITION until their leaders are elected; a loaded machine takes a while. */
async function untilLeaders (admin: Admin, topics: string[], partitions: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const { topics: found } = await admin.fetchTopicMetadata({ topics })
      if (found.length === topics.length && found.every((t) => t.partitions.length === partitions && t.partitions.every((p) => p.leader >= 0))) return
    } catch (err) {
      if (Date.now() > deadline) throw err
    }
    if (Date.now() > deadline) throw new Error(`topics without leaders after ${timeoutMs} ms`)
    await sleep(200)
  }
}

/** Polls GET /health/ready until it answers `status` (bounded); returns the last body. */
export async function waitForReadiness (url: string, status: 200 | 503, timeoutMs = 30_000): Promise<any> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const res = await fetch(`${url}/health/ready`)
    const body = await res.json()
    if (res.status === status) return body
    if (Date.now() > deadline) throw new Error(`readiness stayed ${res.status} (${JSON.stringify(body)}) for ${timeoutMs} ms`)
    await sleep(200)
  }
}

/** A gateway consuming the fixture's topics, ready (group joined) before it is returned. */
export async function gateway (t: Test, kafka: KafkaFixture, overrides: Record<string, string | number> = {}, createBroker?: (deliver: DeliverFn) => Broker): Promise<RunningServer> {
  const server = await startServer(t, { ...kafka.env, ...overrides }, { createBroker })
  await waitForReadiness(server.url, 200)
  return server
}

export async function metricsText (url: string): Promise<string> {
  return await (await fetch(`${url}/metrics`)).text()
}

/** The value of one sample line of the Prometheus text, 0 when absent. */
export function sample (text: string, name: string, labels: Record<string, string>): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && want.every((w) => l.includes(w)))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1))
}

export async function waitForMetric (url: string, name: string, labels: Record<string, string>, atLeast: number, timeoutMs = 15_000): Promise<number> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = sample(await metricsText(url), name, labels)
    if (value >= atLeast) return value
    if (Date.now() > deadline) throw new Error(`${name}${JSON.stringify(labels)} stayed at ${value} (< ${atLeast}) for ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** Every frame a WebSocket client has, after a ping round trip proved earlier events were flushed. */
export async function settled (client: WsClient): Promise<Array<{ channel: string, type: string, payload: any }>> {
  await client.request({ type: 'system:ping' })
  return client.events().map((f) => ({ channel: f.channel, type: f.type, payload: f.payload }))
}

/**
 * Takes the Kafka test lock, then checks that the broker answers. In that order: a
 * probe taken before the lock can land while test/kafka-restart.test.ts has the broker
 * stopped, and would fail (CI) or skip a test that the lock would have made wait.
 */
export async function useKafka (t: Test, mode: 'shared' | 'exclusive' = 'shared'): Promise<boolean> {
  await holdKafka(t, mode)
  return requireService(t, 'kafka', await kafkaReachable())
}

export async function holdKafka (t: Test, mode: 'shared' | 'exclusive', timeoutMs = 150_000): Promise<void> {
  await holdServiceLock(t, 'kafka', mode, timeoutMs)
}
