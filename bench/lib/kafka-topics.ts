import { randomBytes } from 'node:crypto'
import { closeSync, mkdirSync, openSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import kafkajs, { type Admin, type Producer, type TopicMessages } from 'kafkajs'
import { KAFKA_TOPICS } from '../../lib/ingress/kafka-mapping.js'
import { now, sleep } from './clock.js'
import { emptyExpected, type Expected, expect, mixMessage } from './kafka-mix.js'

const { Kafka, logLevel } = kafkajs

/**
 * The Kafka side of the benchmark outside the gateway: topics of the run's own (a
 * unique prefix, deleted afterwards, never shared with tests or other runs), and a
 * producer for the backlog and the steady rate. Bounded: every wait has a deadline.
 */
export const KAFKA_BROKERS = process.env.BENCH_KAFKA_BROKERS ?? '127.0.0.1:9092'

/** Messages per produce request while filling the backlog. */
const BACKLOG_CHUNK = 2000

export function kafkaClient (clientId: string): InstanceType<typeof Kafka> {
  return new Kafka({ clientId, brokers: KAFKA_BROKERS.split(','), logLevel: logLevel.NOTHING, connectionTimeout: 3000, retry: { retries: 5, initialRetryTime: 200 } })
}

/** The gateway's topics (docs/protocol.md, Kafka) and the DLQ under `prefix`. */
export const topicsOf = (prefix: string): string[] => [...KAFKA_TOPICS, 'realtime.dlq'].map((t) => `${prefix}${t}`)

export class BenchTopics {
  private readonly admin: Admin
  private readonly producer: Producer
  private readonly steadyProducer: Producer
  /** Every topic this process created and has not deleted yet (run.ts's signal handler deletes them too). */
  static readonly live = new Set<string>()
  private readonly created = new Set<string>()

  private constructor (kafka: InstanceType<typeof Kafka>) {
    this.admin = kafka.admin()
    // Idempotent: on a loaded machine a produce request can time out and be retried, and a
    // plain producer then writes its messages twice (seen here as ~2 % more events than
    // expected in every case alike).
    this.producer = kafka.producer({ allowAutoTopicCreation: false, idempotent: true, maxInFlightRequests: 1 })
    // The steady rate's producer is a plain one: one request at a time would queue sends
    // behind each other and charge the queueing to the gateway's latency.
    this.steadyProducer = kafka.producer({ allowAutoTopicCreation: false })
  }

  static async connect (): Promise<BenchTopics> {
    const topics = new BenchTopics(kafkaClient(`rtg-bench-${process.pid}`))
    try {
      await topics.admin.connect()
      await topics.producer.connect()
      await topics.steadyProducer.connect()
    } catch (err) {
      await topics.close()
      throw new Error(`kafka at ${KAFKA_BROKERS} is not reachable: ${(err as Error).message}`)
    }
    return topics
  }

  /** Creates the topics under `prefix` and waits until every partition has a leader. */
  async create (prefix: string, partitions: number): Promise<void> {
    const names = topicsOf(prefix)
    for (const name of names) { this.created.add(name); BenchTopics.live.add(name) }
    await this.admin.createTopics({ waitForLeaders: false, topics: names.map((topic) => ({ topic, numPartitions: partitions })) })
    const deadline = Date.now() + 30_000
    for (;;) {
      const found = await this.admin.fetchTopicMetadata({ topics: names }).catch(() => ({ topics: [] }))
      if (found.topics.length === names.length && found.topics.every((t) => t.partitions.length === partitions && t.partitions.every((p) => p.leader >= 0))) return
      if (Date.now() > deadline) throw new Error(`topics under ${prefix} without leaders after 30 s`)
      await sleep(200)
    }
  }

  /** Produces messages [from, from + count) of the mix under `prefix`; returns what the gateway must make of them. */
  async backlog (prefix: string, from: number, count: number): Promise<Expected> {
    const expected = emptyExpected()
    for (let i = from; i < from + count; i += BACKLOG_CHUNK) {
      const chunk = Array.from({ length: Math.min(BACKLOG_CHUNK, from + count - i) }, (_, k) => mixMessage(i + k, now()))
      for (const m of chunk) expect(expected, m)
      await this.send(prefix, chunk)
    }
    return expected
  }

  /**
   * Produces the mix at `rate` messages a second for `durationMs`, `perSend` messages per
   * request on a fixed schedule (not drifting with each send); each value carries its send time.
   */
  async steady (prefix: string, from: number, rate: number, durationMs: number, perSend = 10): Promise<Expected> {
    const expected = emptyExpected()
    const sends = Math.max(1, Math.round((rate * durationMs) / 1000 / perSend))
    const periodMs = (perSend * 1000) / rate
    const inFlight: Array<Promise<void>> = []
    const start = now()
    for (let s = 0; s < sends; s++) {
      await sleep(start + s * periodMs - now())
      const chunk = Array.from({ length: perSend }, (_, k) => mixMessage(from + s * perSend + k, now()))
      for (const m of chunk) expect(expected, m)
      inFlight.push(this.send(prefix, chunk, this.steadyProducer))
    }
    await Promise.all(inFlight)
    return expected
  }

  async delete (): Promise<void> {
    if (this.created.size === 0) return
    await this.admin.deleteTopics({ topics: [...this.created], timeout: 15_000 })
    for (const name of this.created) BenchTopics.live.delete(name)
    this.created.clear()
  }

  async close (): Promise<void> {
    await this.producer.disconnect().catch(() => {})
    await this.steadyProducer.disconnect().catch(() => {})
    await this.admin.disconnect().catch(() => {})
  }

  /** Deletes consumer groups the run made (their offsets would otherwise stay on the broker). */
  async deleteGroups (groupIds: string[]): Promise<void> {
    if (groupIds.length > 0) await this.admin.deleteGroups(groupIds).catch(() => {})
  }

  private async send (prefix: string, messages: Array<ReturnType<typeof mixMessage>>, producer = this.producer): Promise<void> {
    const byTopic = new Map<string, TopicMessages>()
    for (const m of messages) {
      const topic = `${prefix}${m.topic}`
      let entry = byTopic.get(topic)
      if (entry === undefined) byTopic.set(topic, entry = { topic, messages: [] })
      entry.messages.push({ key: m.key, value: m.value })
    }
    await producer.sendBatch({ topicMessages: [...byTopic.values()], acks: producer === this.producer ? -1 : 1 })
  }
}

/**
 * The Kafka test lock of test/kafka-fixture.ts (same directory, same protocol), held
 * shared for the run: the test that restarts Kafka holds it exclusively, so it waits for
 * the bench (and the bench for it) instead of pulling the broker from under a drain.
 * Returns the release.
 */
const LOCK_DIR = join(tmpdir(), 'realtime-gateway-kafka-test-lock')

export async function holdKafkaShared (timeoutMs = 300_000): Promise<() => void> {
  const alive = (pid: number): boolean => { try { process.kill(pid, 0); return true } catch { return false } }
  const writers = (): string[] => {
    mkdirSync(LOCK_DIR, { recursive: true })
    return readdirSync(LOCK_DIR).filter((name) => name.startsWith('exclusive-') && alive(Number(name.split('-')[1])))
  }
  const path = join(LOCK_DIR, `shared-${process.pid}-${randomBytes(3).toString('hex')}`)
  const deadline = Date.now() + timeoutMs
  for (;;) {
    // Announce first, then look: of a reader and a writer that race, at least one sees the other.
    if (writers().length === 0) {
      closeSync(openSync(path, 'wx'))
      if (writers().length === 0) return () => rmSync(path, { force: true })
      rmSync(path, { force: true })
    }
    if (Date.now() > deadline) throw new Error(`the Kafka test lock stayed held exclusively for ${timeoutMs} ms`)
    await sleep(200 + Math.random() * 200)
  }
}

/** For an interrupted run: deletes the topics still live (bounded). */
export async function deleteLiveTopics (): Promise<void> {
  if (BenchTopics.live.size === 0) return
  const admin = kafkaClient(`rtg-bench-cleanup-${process.pid}`).admin()
  try {
    await admin.connect()
    await admin.deleteTopics({ topics: [...BenchTopics.live], timeout: 10_000 })
  } finally {
    await admin.disconnect().catch(() => {})
  }
}
