import { setTimeout as delay } from 'node:timers/promises'
import type { FastifyBaseLogger } from 'fastify'
import fp from 'fastify-plugin'
import kafkajs, { type EachBatchPayload, type LogEntry } from 'kafkajs'
import { kafkaBrokerList } from '../lib/ops/config.js'
import { backoffDelay, type BatchContext, ingestBatch } from '../lib/ingress/kafka-ingest.js'
import { topicNames } from '../lib/ingress/kafka-mapping.js'
import { createKafkaMetrics } from '../lib/ops/kafka-metrics.js'
import { publishAll } from '../lib/ingress/publisher.js'

// kafkajs is CommonJS: its classes live on the default export under NodeNext.
const { Kafka, logLevel: KafkaLogLevel } = kafkajs

/** How long a retry sleep runs between checks that the consumer still owns the partition. */
const SLEEP_SLICE_MS = 500

/**
 * How the consumer fetches (bench/kafka.ts gives its do-nothing consumer the same, so the
 * comparison is of what is done with a message). Short long-polls: shutdown waits at most
 * a second for the fetch in flight.
 */
export const CONSUMER_FETCH = { maxWaitTimeInMs: 1000 }
/**
 * Partitions whose batches are handled side by side. Order only matters within a
 * partition (each is still handled in order, one publish call at a time), so several at
 * once overlap one partition's broker round trips and commits with another's work.
 */
export const PARTITIONS_CONSUMED_CONCURRENTLY = 8

/**
 * The Kafka ingress (docs/protocol.md, Kafka) — the only file that knows kafkajs. A consumer group
 * reads the §7 topics; each partition's batches are handled in order, several partitions
 * at a time, by lib/ingress/kafka-ingest.ts: a batch's events go to the broker in a few
 * large calls rather than one message at a time, and a message's offset is resolved only
 * once it and every earlier one were handed to the broker (or the DLQ), so a crash or
 * restart redelivers rather than loses. Transient failures (broker or Kafka down) are
 * retried in place with backoff, which holds the partition's later messages back and so
 * keeps their order. Heartbeat and commit come once per batch.
 */
export default fp(async (app) => {
  const config = app.config
  const log = app.log.child({ module: 'kafka' })
  const metrics = createKafkaMetrics(app.metricsRegistry)
  const topics = topicNames(config.KAFKA_TOPIC_PREFIX)
  const dlqTopic = `${config.KAFKA_TOPIC_PREFIX}${config.KAFKA_DLQ_TOPIC}`
  const debug = config.LOG_LEVEL === 'debug' || config.LOG_LEVEL === 'trace'

  const kafka = new Kafka({
    clientId: config.KAFKA_CLIENT_ID,
    brokers: kafkaBrokerList(config),
    connectionTimeout: 3000,
    // Connection retries end within ~5 s; past that the consumer crashes (readiness 503)
    // and restarts, and a DLQ send is retried by the ingest loop.
    retry: { retries: 3, initialRetryTime: 300, maxRetryTime: 5000 },
    logLevel: debug ? KafkaLogLevel.INFO : KafkaLogLevel.WARN,
    logCreator: () => kafkaLogEntry(log)
  })
  const consumer = kafka.consumer({
    groupId: config.KAFKA_GROUP_ID,
    ...CONSUMER_FETCH,
    // After a broker restart the coordinator waits this long for the member that vanished
    // with it before the group can form again; 10 s rather than 30 s.
    sessionTimeout: 10_000,
    heartbeatInterval: 3000,
    // kafkajs restarts itself after retriable crashes; never once we are closing.
    retry: { retries: 3, initialRetryTime: 300, maxRetryTime: 5000, restartOnFailure: async () => !closing }
  })
  const producer = kafka.producer({ allowAutoTopicCreation: true })

  let closing = false
  let joined = false
  let producerConnected = false
  let restartTimer: NodeJS.Timeout | undefined
  let restartAttempt = 0

  const { GROUP_JOIN, CRASH, DISCONNECT, STOP, CONNECT } = consumer.events
  consumer.on(CONNECT, () => { log.debug('kafka consumer connected') })
  consumer.on(GROUP_JOIN, (e) => {
    joined = true
    restartAttempt = 0
    metrics.resetLag()
    log.info({ groupId: e.payload.groupId, assignment: e.payload.memberAssignment }, 'kafka consumer joined its group')
  })
  consumer.on(CRASH, (e) => {
    joined = false
    if (closing) return
    log.warn({ err: e.payload.error, restart: e.payload.restart }, 'kafka consumer crashed')
    // kafkajs gives up on errors it deems non-retriable; the gateway still wants its feed.
    if (!e.payload.restart) scheduleStart()
  })
  consumer.on(DISCONNECT, () => { joined = false })
  consumer.on(STOP, () => { joined = false })
  producer.on(producer.events.CONNECT, () => { producerConnected = true })
  producer.on(producer.events.DISCONNECT, () => { producerConnected = false })

  app.readiness.add('kafka', () => joined)

  /**
   * Sleeps in slices, heartbeating and committing what was settled so far (a long outage
   * does not hold back the offsets before it), and gives up as soon as this batch is no
   * longer ours.
   */
  const sleepWhileOwned = (payload: EachBatchPayload) => async (ms: number): Promise<boolean> => {
    const owned = () => !closing && payload.isRunning() && !payload.isStale()
    for (let left = ms; left > 0 && owned(); left -= SLEEP_SLICE_MS) {
      await delay(Math.min(left, SLEEP_SLICE_MS))
      if (owned()) {
        await payload.heartbeat()
        await payload.commitOffsetsIfNecessary()
      }
    }
    return owned()
  }

  const kafkaReplays = app.gatewayMetrics.idempotentReplays.labels({ source: 'kafka' })
  /** What every batch shares; the retry and settle hooks are the batch's own. */
  const ingest: Omit<BatchContext, 'sleep' | 'onRetry' | 'running' | 'settled'> = {
    mapping: {
      lowStockThreshold: config.LOW_STOCK_THRESHOLD,
      limits: { eventMaxBytes: config.EVENT_MAX_BYTES, publishMaxBytes: config.PUBLISH_MAX_BYTES }
    },
    publish: async (drafts) => {
      const events = await publishAll(app.hub, drafts)
      // Events of a message read again (a restart, a rebalance before its commit) are not published twice.
      let again = 0
      for (const event of events) if (event.replayed === true) again++
      if (again > 0) kafkaReplays.inc(again)
      return events
    },
    maxEventsPerPublish: app.hub.broker.maxBatchSize,
    deadLetter: async (message, headers) => {
      if (!producerConnected) await producer.connect()
      await producer.send({ topic: dlqTopic, messages: [{ key: message.key, value: message.value, headers }] })
    }
  }
  const kafkaEvents = app.gatewayMetrics.eventsPublished.labels({ source: 'kafka' })

  async function eachBatch (payload: EachBatchPayload): Promise<void> {
    const { batch } = payload
    const topic = topics.get(batch.topic)
    if (topic === undefined) return // not ours: never resolved, never committed
    const topicMetrics = metrics.topic(batch.topic)
    let lastSettled: string | undefined
    const result = await ingestBatch(topic, batch, {
      ...ingest,
      sleep: sleepWhileOwned(payload),
      running: () => !closing && payload.isRunning() && !payload.isStale(),
      onRetry: (err, attempt, delayMs) => {
        topicMetrics.retried()
        log.warn({ err, topic: batch.topic, partition: batch.partition, attempt, delayMs }, 'kafka messages not handed off yet; retrying')
      },
      settled: (message, outcome) => {
        payload.resolveOffset(message.offset)
        lastSettled = message.offset
        if (outcome.outcome === 'delivered') {
          topicMetrics.delivered(Number(message.timestamp), outcome.orderStatus)
          kafkaEvents.inc(outcome.events)
        } else {
          topicMetrics.deadLettered()
          log.warn({ topic: batch.topic, partition: batch.partition, offset: message.offset, reason: outcome.reason, dlq: dlqTopic },
            'kafka message dead-lettered')
        }
      }
    })
    if (lastSettled !== undefined) metrics.lag(batch.topic, batch.partition, Number(batch.highWatermark) - Number(lastSettled) - 1)
    // Stopped: what was not settled stays unresolved and goes to the partition's next owner.
    if (result === 'stopped') return
    await payload.heartbeat()
    await payload.commitOffsetsIfNecessary()
  }

  async function start (): Promise<void> {
    restartTimer = undefined
    if (closing) return
    try {
      await consumer.connect()
      // A new group starts at the earliest retained message: nothing produced before
      // the gateway first joined is lost. Later starts resume from committed offsets.
      await consumer.subscribe({ topics: [...topics.keys()], fromBeginning: true })
      await consumer.run({
        eachBatch,
        partitionsConsumedConcurrently: PARTITIONS_CONSUMED_CONCURRENTLY,
        eachBatchAutoResolve: false,
        autoCommit: true,
        // Besides the commit after every batch, a long batch commits every second or 100 messages.
        autoCommitInterval: 1000,
        autoCommitThreshold: 100
      })
    } catch (err) {
      if (closing) return
      log.warn({ err }, 'kafka consumer could not start; trying again')
      await consumer.disconnect().catch(() => {})
      scheduleStart()
    }
  }

  function scheduleStart (): void {
    if (closing || restartTimer !== undefined) return
    restartTimer = setTimeout(() => { void start() }, backoffDelay(++restartAttempt, { initialMs: 500, maxMs: 10_000 }))
  }

  app.addHook('onReady', async () => {
    // Not awaited: Kafka being down at boot must not keep the gateway from serving.
    void start()
    producer.connect().catch((err) => log.warn({ err }, 'kafka DLQ producer could not connect yet'))
  })

  app.addHook('onClose', async () => {
    closing = true
    clearTimeout(restartTimer)
    // Disconnecting waits for the message in hand, then commits what was delivered and
    // leaves the group. Bounded: whatever is not committed is redelivered, never lost.
    const budget = Math.max(1000, Math.floor(config.SHUTDOWN_TIMEOUT_MS / 2))
    await bounded(consumer.disconnect(), budget, () => log.warn('kafka consumer did not disconnect in time'))
    await bounded(producer.disconnect(), 1000, () => log.warn('kafka DLQ producer did not disconnect in time'))
  })
}, { name: 'kafka', dependencies: ['config', 'hub', 'metrics', 'readiness'] })

async function bounded (work: Promise<unknown>, ms: number, onTimeout: () => void): Promise<void> {
  const timer = delay(ms, 'timeout' as const, { ref: false })
  const result = await Promise.race([work.then(() => 'done' as const, () => 'done' as const), timer])
  if (result === 'timeout') onTimeout()
}

/** kafkajs log lines into the app's pino logger; they carry broker and group details, never message values. */
function kafkaLogEntry (log: FastifyBaseLogger) {
  return ({ level, log: { message, timestamp: _ts, logger: _l, ...extra } }: LogEntry): void => {
    if (level === KafkaLogLevel.ERROR) log.error(extra, `kafkajs: ${message}`)
    else if (level === KafkaLogLevel.WARN) log.warn(extra, `kafkajs: ${message}`)
    else if (level === KafkaLogLevel.INFO) log.debug(extra, `kafkajs: ${message}`)
    else log.trace(extra, `kafkajs: ${message}`)
  }
}
