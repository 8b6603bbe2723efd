import net from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'
import tls from 'node:tls'
import type { FastifyBaseLogger } from 'fastify'
import fp from 'fastify-plugin'
import kafkajs, { type EachBatchPayload, type ISocketFactory, type LogEntry } from 'kafkajs'
import { kafkaBrokerList } from '../lib/ops/config.js'
import { quietIdleRequestQueues } from '../lib/ingress/kafkajs-request-queue.js'
import { BackgroundCommits } from '../lib/ingress/kafka-commits.js'
import { ConsumerLag, type LagSource, LagPoller } from '../lib/ingress/consumer-lag.js'
import { backoffDelay, type BatchContext, ingestBatch } from '../lib/ingress/kafka-ingest.js'
import { topicNames } from '../lib/ingress/kafka-mapping.js'
import { GroupLiveness } from '../lib/ingress/group-liveness.js'
import { refusedAsTooLarge, standInRecord } from '../lib/ingress/dead-letter.js'
import { QuietWarning } from '../lib/core/quiet-warning.js'
import { createKafkaMetrics } from '../lib/ops/kafka-metrics.js'
import { publishAll } from '../lib/ingress/publisher.js'

// kafkajs is CommonJS: its classes live on the default export under NodeNext.
const { Kafka, logLevel: KafkaLogLevel, CompressionTypes } = kafkajs

/** How long a retry sleep runs between checks that the consumer still owns the partition. */
const SLEEP_SLICE_MS = 500
/** Resolved offsets are committed in the background at most this often (lib/ingress/kafka-commits.ts). */
const COMMIT_INTERVAL_MS = 1000
/** How often the lag of this member's partitions is read from Kafka (lib/ingress/consumer-lag.ts). */
const LAG_INTERVAL_MS = 5000

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

/** A member the group coordinator has not heard from for this long is dropped, and its partitions go to others. */
const SESSION_TIMEOUT_MS = 10_000
const HEARTBEAT_INTERVAL_MS = 3000
/** How long a rejoin may wait for the group's other members (kafkajs's default, named). */
const REBALANCE_TIMEOUT_MS = 60_000
/**
 * How long a batch waits for the group to confirm its partition is still this member's
 * (stillOwned) before leaving the batch to the group: two heartbeat intervals and more.
 */
const CONFIRM_OWNERSHIP_WITHIN_MS = 4 * HEARTBEAT_INTERVAL_MS

/**
 * The Kafka ingress (docs/protocol.md, Kafka) — the only file that knows kafkajs. A consumer group
 * reads the documented topics; each partition's batches are handled in order, several partitions
 * at a time, by lib/ingress/kafka-ingest.ts: a batch's events go to the broker in a few
 * large calls rather than one message at a time, and a message's offset is resolved only
 * once it and every earlier one were handed to the broker (or the DLQ), so a crash or
 * restart redelivers rather than loses. Transient failures (broker or Kafka down) are
 * retried in place with backoff, which holds the partition's later messages back and so
 * keeps their order. Heartbeats come once per batch; offsets are committed in the background
 * (lib/ingress/kafka-commits.ts), so the next fetch never waits for a commit.
 */
export default fp(async (app) => {
  const config = app.config
  const log = app.log.child({ module: 'kafka' })
  const metrics = createKafkaMetrics(app.metricsRegistry)
  const topics = topicNames(config.KAFKA_TOPIC_PREFIX)
  const dlqTopic = `${config.KAFKA_TOPIC_PREFIX}${config.KAFKA_DLQ_TOPIC}`
  const debug = config.LOG_LEVEL === 'debug' || config.LOG_LEVEL === 'trace'
  // No timer ticking every millisecond per broker connection while idle (the module says why).
  if (!quietIdleRequestQueues()) log.warn('kafkajs\'s request queue is not the one patched for its idle timer; left as it is')

  const kafka = new Kafka({
    clientId: config.KAFKA_CLIENT_ID,
    brokers: kafkaBrokerList(config),
    connectionTimeout: 3000,
    // Connection retries end within ~5 s; past that the consumer crashes (readiness 503)
    // and restarts, and a DLQ send is retried by the ingest loop.
    retry: { retries: 3, initialRetryTime: 300, maxRetryTime: 5000 },
    logLevel: debug ? KafkaLogLevel.INFO : KafkaLogLevel.WARN,
    logCreator: () => kafkaLogEntry(log),
    socketFactory
  })
  const consumer = kafka.consumer({
    groupId: config.KAFKA_GROUP_ID,
    ...CONSUMER_FETCH,
    // After a broker restart the coordinator waits this long for the member that vanished
    // with it before the group can form again; 10 s rather than 30 s.
    sessionTimeout: SESSION_TIMEOUT_MS,
    heartbeatInterval: HEARTBEAT_INTERVAL_MS,
    rebalanceTimeout: REBALANCE_TIMEOUT_MS,
    // kafkajs restarts itself after retriable crashes; never once we are closing.
    retry: { retries: 3, initialRetryTime: 300, maxRetryTime: 5000, restartOnFailure: async () => !closing }
  })
  const producer = kafka.producer({ allowAutoTopicCreation: true })
  const admin = kafka.admin()

  let closing = false
  // Not ready once the coordinator has not answered a heartbeat for as long as it waits before dropping a member.
  const liveness = new GroupLiveness(SESSION_TIMEOUT_MS, REBALANCE_TIMEOUT_MS)
  let producerConnected = false
  let restartTimer: NodeJS.Timeout | undefined
  let restartAttempt = 0

  /** Heartbeats the group coordinator answered, and the times this member joined the group (each a new generation). */
  let heartbeatsAnswered = 0
  let joins = 0
  /** Where this member stands in the partitions it was given, for the lag gauge. */
  const lag = new ConsumerLag()

  const { GROUP_JOIN, HEARTBEAT, REBALANCING, CRASH, DISCONNECT, STOP, CONNECT, FETCH } = consumer.events
  consumer.on(CONNECT, () => { log.debug('kafka consumer connected') })
  consumer.on(HEARTBEAT, () => {
    heartbeatsAnswered++
    liveness.heard()
  })
  /** The partitions are the group's to give again: this member reports none until it joins (the gauge is per owner). */
  const leftPartitions = (): void => {
    lag.assigned({})
    metrics.resetLag()
  }
  consumer.on(REBALANCING, () => {
    liveness.rejoining()
    leftPartitions()
  })
  consumer.on(GROUP_JOIN, (e) => {
    joins++
    liveness.joined()
    restartAttempt = 0
    metrics.resetLag()
    lag.assigned(e.payload.memberAssignment)
    log.info({ groupId: e.payload.groupId, assignment: e.payload.memberAssignment }, 'kafka consumer joined its group')
  })
  consumer.on(CRASH, (e) => {
    liveness.left()
    leftPartitions()
    if (closing) return
    log.warn({ err: e.payload.error, restart: e.payload.restart }, 'kafka consumer crashed')
    // kafkajs gives up on errors it deems non-retriable; the gateway still wants its feed.
    if (!e.payload.restart) scheduleStart()
  })
  consumer.on(FETCH, () => {
    // Out of kafkajs's fetch loop, which stopping the consumer waits for.
    if (liveness.fetched()) setImmediate(() => { void restartOrphan() })
  })
  consumer.on(DISCONNECT, () => {
    liveness.left()
    leftPartitions()
  })
  consumer.on(STOP, () => {
    liveness.left()
    leftPartitions()
  })
  producer.on(producer.events.CONNECT, () => { producerConnected = true })
  producer.on(producer.events.DISCONNECT, () => { producerConnected = false })

  app.readiness.add('kafka', () => liveness.ready)

  /** Each partition's ends and the group's commits, from Kafka's admin API (connected on first use). */
  let adminConnecting: Promise<void> | null = null
  const connectedAdmin = async (): Promise<void> => {
    adminConnecting ??= admin.connect()
    await adminConnecting
  }
  const lagSource: LagSource = {
    ends: async (topic) => {
      await connectedAdmin()
      return new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, { low: Number(p.low), high: Number(p.high) }]))
    },
    committed: async (names) => {
      await connectedAdmin()
      // -1: the group never committed there.
      return new Map((await admin.fetchOffsets({ groupId: config.KAFKA_GROUP_ID, topics: [...names] })).map(({ topic, partitions }) =>
        [topic, new Map(partitions.filter((p) => Number(p.offset) >= 0).map((p) => [p.partition, Number(p.offset)]))]))
    }
  }
  /** The lag gauge, read on a timer: a batch stuck retrying never ends, and what builds up behind it must show. */
  const lagPoller = new LagPoller(lag, lagSource, (lags) => {
    for (const { topic, partition, lag: behind } of lags) metrics.lag(topic, partition, behind)
  }, (err) => {
    // Kafka unreachable: readiness says so; the gauge keeps its last reading.
    log.debug({ err }, 'kafka consumer lag not read')
    adminConnecting = null
    void admin.disconnect().catch(() => {})
  }, LAG_INTERVAL_MS)

  /** The latest batch's hooks: they act on the consumer group as it is now (its current generation). */
  let current: Pick<EachBatchPayload, 'commitOffsetsIfNecessary' | 'uncommittedOffsets'> | undefined
  const commits = new BackgroundCommits(async () => {
    if (current !== undefined) await current.commitOffsetsIfNecessary(current.uncommittedOffsets())
  }, COMMIT_INTERVAL_MS, (err) => { log.warn({ err }, 'kafka offset commit failed; the next one carries its offsets') })

  /**
   * A heartbeat; when it reports a rebalance, what was resolved is committed first (the
   * partitions may go to another member), as kafkajs's autoCommit would.
   */
  async function heartbeat (payload: EachBatchPayload): Promise<void> {
    try {
      await payload.heartbeat()
    } catch (err) {
      await commits.flush().catch((e: unknown) => log.warn({ err: e }, 'kafka offsets not committed before a rebalance'))
      throw err
    }
  }

  /**
   * Sleeps in slices, heartbeating (offsets settled so far are committed in the background:
   * a long outage does not hold back the offsets before it), and gives up as soon as this
   * batch is no longer ours.
   */
  const sleepWhileOwned = (payload: EachBatchPayload) => async (ms: number): Promise<boolean> => {
    const owned = () => !closing && payload.isRunning() && !payload.isStale()
    for (let left = ms; left > 0 && owned(); left -= SLEEP_SLICE_MS) {
      await delay(Math.min(left, SLEEP_SLICE_MS))
      if (owned()) await heartbeat(payload)
    }
    return owned()
  }

  /**
   * Whether the group still gives this batch's partition to this member, asked when the
   * broker found the partition's mark past where the batch's log ends (SourceMovedError):
   * either the topic was created again, or this member was paused past its session (a VM
   * or container frozen, a debugger, SIGSTOP) and woke up with a batch fetched before the
   * pause while another member took the partition over and published past it; publishing
   * it again would then be a second time (docs/protocol.md, Kafka: effectively once). Yes
   * takes two heartbeats answered from now on (kafkajs sends one at a time and at most one
   * per interval, so the second left after the first's answer: after this question, never
   * an answer that waited out the pause in a socket), and no join since the batch began
   * (the group's generation is still the batch's). A paused member was dropped from the
   * group: its heartbeat fails.
   */
  async function stillOwned (payload: EachBatchPayload, generation: number): Promise<boolean> {
    const { topic, partition } = payload.batch
    const heard = heartbeatsAnswered
    const confirmed = () => heartbeatsAnswered - heard >= 2
    const owned = () => !closing && payload.isRunning() && !payload.isStale() && joins === generation
    const giveUpAt = performance.now() + CONFIRM_OWNERSHIP_WITHIN_MS
    try {
      while (!confirmed()) {
        if (!owned() || performance.now() > giveUpAt) return false
        await heartbeat(payload)
        if (!confirmed()) await delay(SLEEP_SLICE_MS)
      }
    } catch (err) {
      log.warn({ err, topic, partition }, 'kafka partition no longer ours: another member has published past this batch, which is left to the group')
      return false
    }
    if (!owned()) return false
    log.warn({ topic, partition }, 'kafka partition\'s mark is past its log end and the partition is still ours: a topic created again; its mark is set aside')
    return true
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
      try {
        // Compressed: a copy with the x-dlq-* headers added must still fit the topic's limit.
        await producer.send({ topic: dlqTopic, compression: CompressionTypes.GZIP, messages: [{ key: message.key, value: message.value, headers }] })
      } catch (err) {
        if (!refusedAsTooLarge(err)) throw err // retried by the ingest loop
        // Refused for good: a stand-in goes instead, or the partition would wait behind it for ever.
        await producer.send({ topic: dlqTopic, messages: [standInRecord(message, headers)] })
        // Once sent: a stand-in refused too is retried, and this said otherwise every time.
        log.warn({ topic: message.topic, partition: message.partition, offset: message.offset, bytes: message.value?.length ?? 0, dlq: dlqTopic },
          'kafka message too large for the DLQ topic: a stand-in without its value was dead-lettered')
      }
    }
  }
  const kafkaEvents = app.gatewayMetrics.kafkaEventsPublished
  // A producer gone wrong dead-letters every message it sends: a line each was 5,423 lines in
  // a soak. One a second, saying how many more (and, at a burst's end, how many since the
  // last line); the metric and the DLQ itself count them all.
  const deadLetterWarning = new QuietWarning(1000, {
    onHeldBack: (heldBack) => log.warn({ dlq: dlqTopic, heldBack }, 'kafka messages dead-lettered (held back since the last line)')
  })

  async function eachBatch (payload: EachBatchPayload): Promise<void> {
    const { batch } = payload
    const topic = topics.get(batch.topic)
    if (topic === undefined) return // not ours: never resolved, never committed
    const generation = joins
    const topicMetrics = metrics.topic(batch.topic)
    current = payload
    let lastSettled: string | undefined
    const result = await ingestBatch(topic, batch, {
      ...ingest,
      sleep: sleepWhileOwned(payload),
      running: () => !closing && payload.isRunning() && !payload.isStale(),
      confirmOwnership: async () => await stillOwned(payload, generation),
      onRetry: (err, attempt, delayMs) => {
        topicMetrics.retried()
        log.warn({ err, topic: batch.topic, partition: batch.partition, attempt, delayMs }, 'kafka messages not handed off yet; retrying')
      },
      settled: (message, outcome, last) => {
        lastSettled = message.offset
        if (last) {
          payload.resolveOffset(message.offset)
          commits.resolved()
        }
        if (outcome.outcome === 'delivered') {
          topicMetrics.delivered(Number(message.timestamp), outcome.orderStatus)
          kafkaEvents.inc(outcome.events)
        } else {
          topicMetrics.deadLettered()
          const heldBack = deadLetterWarning.occurred()
          if (heldBack !== undefined) {
            log.warn({ topic: batch.topic, partition: batch.partition, offset: message.offset, reason: outcome.reason, dlq: dlqTopic, heldBack },
              'kafka message dead-lettered')
          }
        }
      }
    })
    // A batch of an earlier generation settles partitions that may be another member's by now.
    if (lastSettled !== undefined && joins === generation) lag.settled(batch.topic, batch.partition, lastSettled)
    // Stopping: what was settled is committed now (the group is left next); what was not
    // stays unresolved and goes to the partition's next owner.
    if (closing) await commits.flush().catch((err: unknown) => log.warn({ err }, 'kafka offsets not committed at shutdown'))
    if (result === 'stopped') return
    await heartbeat(payload)
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
        // Commits in the background (`commits`): kafkajs's autoCommit commits after every batch, before the next fetch.
        autoCommit: false
      })
    } catch (err) {
      if (closing) return
      log.warn({ err }, 'kafka consumer could not start; trying again')
      await consumer.disconnect().catch(() => {})
      scheduleStart()
    }
  }

  /** The consumer runs but is in no group, and kafkajs will not rejoin (GroupLiveness.fetched): it is started again. */
  let restartingOrphan = false
  async function restartOrphan (): Promise<void> {
    if (closing || restartingOrphan) return
    restartingOrphan = true
    log.warn('kafka consumer fetches but no heartbeat was answered for twice the session timeout: it is in no group; restarting it')
    try {
      await bounded(consumer.disconnect(), SESSION_TIMEOUT_MS, () => log.warn('kafka consumer did not disconnect in time for its restart'))
    } finally {
      restartingOrphan = false
    }
    scheduleStart()
  }

  function scheduleStart (): void {
    if (closing || restartTimer !== undefined) return
    restartTimer = setTimeout(() => { void start() }, backoffDelay(++restartAttempt, { initialMs: 500, maxMs: 10_000 }))
  }

  app.addHook('onReady', async () => {
    // Not awaited: Kafka being down at boot must not keep the gateway from serving.
    void start()
    lagPoller.start()
    producer.connect().catch((err) => log.warn({ err }, 'kafka DLQ producer could not connect yet'))
  })

  app.addHook('onClose', async () => {
    closing = true
    clearTimeout(restartTimer)
    const lagStopped = lagPoller.stop()
    commits.stop()
    // What was settled before now (an idle consumer has no batch in hand to commit it).
    await bounded(commits.flush(), 1000, () => log.warn('kafka offsets were not committed in time'))
    // Disconnecting waits for the message in hand, then commits what was delivered and
    // leaves the group. Bounded: whatever is not committed is redelivered, never lost.
    const budget = Math.max(1000, Math.floor(config.SHUTDOWN_TIMEOUT_MS / 2))
    await bounded(consumer.disconnect(), budget, () => log.warn('kafka consumer did not disconnect in time'))
    await bounded(producer.disconnect(), 1000, () => log.warn('kafka DLQ producer did not disconnect in time'))
    // After the reading in flight, if any: nothing reads Kafka once this is done.
    await bounded(lagStopped, 1000, () => log.warn('kafka consumer lag reading did not end in time'))
    await bounded(admin.disconnect(), 1000, () => log.warn('kafka admin client did not disconnect in time'))
  })
}, { name: 'kafka', dependencies: ['config', 'hub', 'metrics', 'readiness'] })

/**
 * kafkajs's own socket factory plus TCP_NODELAY: fetches, heartbeats and commits share a
 * connection, and with Nagle a small request sent while another is unacknowledged waits
 * for its ACK (up to the peer's delayed-ACK timer) — latency on the fetch path.
 */
const socketFactory: ISocketFactory = ({ host, port, ssl, onConnect }) => {
  // kafkajs passes its `ssl` option through: absent, false, true or TLS options.
  const secure = ssl as tls.ConnectionOptions | boolean | undefined | null
  const socket = secure === undefined || secure === null || secure === false
    ? net.connect({ host, port }, onConnect)
    : tls.connect({ host, port, ...(net.isIP(host) === 0 ? { servername: host } : {}), ...(secure === true ? {} : secure) }, onConnect)
  socket.setKeepAlive(true, 60_000)
  socket.setNoDelay(true)
  return socket
}

async function bounded (work: Promise<unknown>, ms: number, onTimeout: () => void): Promise<void> {
  const timer = delay(ms, 'timeout' as const, { ref: false })
  const result = await Promise.race([work.then(() => 'done' as const, () => 'done' as const), timer])
  if (result === 'timeout') onTimeout()
}

/**
 * A broker's answer that the group is rebalancing: kafkajs logs it as an error for the
 * request it answered (a heartbeat, a commit), then rejoins. It comes with every member that
 * joins or leaves (a scale-out, a rolling deploy), so it is a warning here, not an alert.
 */
const REBALANCING = 'The group is rebalancing, so a rejoin is needed'

/** kafkajs log lines into the app's pino logger; they carry broker and group details, never message values. */
function kafkaLogEntry (log: FastifyBaseLogger) {
  return ({ level, log: { message, timestamp: _ts, logger: _l, ...extra } }: LogEntry): void => {
    if (level === KafkaLogLevel.ERROR && (extra as { error?: unknown }).error === REBALANCING) log.warn(extra, `kafkajs: ${message}`)
    else if (level === KafkaLogLevel.ERROR) log.error(extra, `kafkajs: ${message}`)
    else if (level === KafkaLogLevel.WARN) log.warn(extra, `kafkajs: ${message}`)
    else if (level === KafkaLogLevel.INFO) log.debug(extra, `kafkajs: ${message}`)
    else log.trace(extra, `kafkajs: ${message}`)
  }
}
