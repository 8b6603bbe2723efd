import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { now, sleep } from './lib/clock.js'
import { Histogram, type SparseHistogram } from './lib/histogram.js'
import { ChildChannel } from './lib/ipc.js'
import { emptyExpected, type Expected, expect, LOW_STOCK_THRESHOLD, mixChannels, mixMessage } from './lib/kafka-mix.js'
import { BenchTopics, holdKafkaShared, KAFKA_BROKERS } from './lib/kafka-topics.js'
import { cpuSplit } from './lib/machine-cpu.js'
import { deleteClusterPrefix, deletePrefix, requireRedis } from './lib/redis-prefix.js'

/**
 * The Kafka ingest case (issue 18, part 3). In one run, on topics of its own:
 * (a) the limit: a kafkajs consumer in a fresh group that does nothing drains a backlog
 *     of the mix of topics docs/protocol.md (Kafka) lists (bench/servers/kafka-null.ts);
 * (b) the gateway on the memory broker, in a fresh group, drains the same backlog into
 *     connected WebSocket clients (bench/kafka-clients.ts), every event counted and its
 *     offset checked;
 * (c) the same on Redis, under a key prefix of the run's own, deleted afterwards;
 * then produce-to-receive latency at a steady rate, for each broker, on fresh topics.
 * Each gateway is a child process (bench/servers/gateway.ts). The gateway's publishes are
 * held until its clients are connected (BENCH_KAFKA_GATED), so its clock runs from the
 * release to the last event received; the limit's from its first batch to its last.
 */
export interface KafkaSettings {
  backlog: number
  partitions: number
  latencyRate: number
  latencyMs: number
  warmupMs: number
  /** Settings the gateway's consumer runs with, given to the do-nothing consumer too. */
  consumer: { maxWaitTimeInMs: number, maxBytesPerPartition?: number, maxBytes?: number }
  partitionsConsumedConcurrently: number
  brokers: KafkaBroker[]
  profileDir?: string
}

export interface DrainResult {
  name: string
  messagesPerSec: number
  eventsPerSec?: number
  ms: number
  messages: number
  events?: number
  /** Events the clients received, and how many channels got a count other than expected. */
  delivered?: number
  wrongChannels?: number
  wrong?: string[]
  /** Events whose offset was not the channel's previous one plus one. */
  gaps?: number
  dlq?: number
  /** CPU time per message: the gateway process's, its clients' process's, and the whole machine's (Kafka and Redis included). */
  cpuUsPerMessage?: number
  clientsCpuUsPerMessage?: number
  machineCpuUsPerMessage?: number
  error?: string
}

export interface LatencyResult {
  name: string
  rate: number
  messages: number
  events: number
  received: number
  p50: number
  p99: number
  gaps: number
  wrongChannels: number
  error?: string
}

export interface KafkaResult {
  settings: KafkaSettings
  expected?: Pick<Expected, 'messages' | 'events' | 'dlq'>
  produceMs?: number
  limit?: DrainResult
  drains: DrainResult[]
  latency: LatencyResult[]
  cleanup: string[]
  error?: string
}

/** Where the gateway keeps channels: in process, one Redis, or the local Redis Cluster (scripts/redis-cluster.sh). */
export type KafkaBroker = 'memory' | 'redis' | 'cluster'

const REDIS_URL = 'redis://127.0.0.1:6379'
const REDIS_CLUSTER_NODES = process.env.BENCH_REDIS_CLUSTER_NODES ?? '127.0.0.1:30001,127.0.0.1:30002,127.0.0.1:30003'

/** The gateway's environment for `broker`, its keys under `redisPrefix`. */
function brokerEnv (broker: KafkaBroker, redisPrefix: string): Record<string, string> {
  if (broker === 'redis') return { BENCH_REDIS_URL: REDIS_URL, BENCH_REDIS_KEY_PREFIX: redisPrefix }
  if (broker === 'cluster') return { BENCH_REDIS_CLUSTER_NODES: REDIS_CLUSTER_NODES, BENCH_REDIS_KEY_PREFIX: redisPrefix }
  return {}
}

/**
 * Deletes a run's keys under `prefix`: on `broker`'s servers, failing as they do; or, for
 * run.ts's signal handler (`broker` not known), in Redis and on the cluster's masters.
 */
export async function deleteKafkaPrefix (prefix: string, broker?: KafkaBroker): Promise<number> {
  if (broker === 'redis') return await deletePrefix(REDIS_URL, prefix)
  if (broker === 'cluster') return await deleteClusterPrefix(REDIS_CLUSTER_NODES, prefix)
  const [one, cluster] = await Promise.all([
    deletePrefix(REDIS_URL, prefix).catch(() => 0),
    deleteClusterPrefix(REDIS_CLUSTER_NODES, prefix).catch(() => 0)
  ])
  return one + cluster
}
const script = (name: string) => fileURLToPath(new URL(name, import.meta.url))
type Track = (c: ChildChannel) => void

/** Redis key prefixes of runs in flight, for run.ts's signal handler. */
export const liveKafkaPrefixes = new Set<string>()

interface Clients { channel: ChildChannel }

function startGateway (label: string, secret: string, env: Record<string, string>, settings: KafkaSettings, track: Track): ChildChannel {
  const profile = settings.profileDir !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${settings.profileDir}/${label}`] : []
  const child = fork(script('servers/gateway.js'), [], {
    execArgv: profile,
    env: { ...process.env, BENCH_LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'error', ...env, BENCH_JWT_SECRET: secret, BENCH_KAFKA_BROKERS: KAFKA_BROKERS, BENCH_LOW_STOCK_THRESHOLD: String(LOW_STOCK_THRESHOLD) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  const channel = new ChildChannel(child, label)
  track(channel)
  return channel
}

async function startClients (port: number, secret: string, track: Track): Promise<Clients> {
  const channel = new ChildChannel(fork(script('kafka-clients.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }), 'kafka-clients')
  track(channel)
  const channels = mixChannels()
  await channel.request({ op: 'connect', url: `ws://127.0.0.1:${port}/ws`, secret, ...channels, perConnection: 60 }, 60_000)
  return { channel }
}

/** Polls the gateway's readiness (Kafka group joined, broker up) until 200; bounded. */
async function untilReady (port: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const res = await fetch(`http://127.0.0.1:${port}/health/ready`).catch(() => undefined)
    if (res?.status === 200) return
    if (Date.now() > deadline) throw new Error(`gateway on ${port} not ready within ${timeoutMs} ms: ${res === undefined ? 'no answer' : await res.text()}`)
    await sleep(100)
  }
}

/** gateway_kafka_messages_total{outcome="dlq"} summed over topics. */
async function dlqCount (port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  return text.split('\n').filter((l) => l.startsWith('gateway_kafka_messages_total{') && l.includes('outcome="dlq"'))
    .reduce((s, l) => s + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)
}

async function stop (servers: ChildChannel[]): Promise<void> {
  await Promise.all(servers.map(async (c) => {
    // `close` shuts the app down (the consumer leaves its group); `exit` ends the process (profiles are written).
    await c.request({ op: 'close' }, 20_000).catch(() => {})
    await c.request({ op: 'exit' }, 5000).catch(() => {})
    await new Promise((resolve) => { if (c.child.exitCode !== null) resolve(null); else { c.child.once('exit', resolve); setTimeout(resolve, 10_000).unref() } })
    c.kill()
  }))
}

async function runLimit (prefix: string, groupId: string, expected: Expected, settings: KafkaSettings, track: Track): Promise<DrainResult> {
  const child = new ChildChannel(fork(script('servers/kafka-null.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }), 'kafka-null')
  track(child)
  try {
    await child.event('ready', 30_000)
    const timeoutMs = 60_000 + expected.messages
    const r = await child.request<{ count: number, firstAt: number, lastAt: number, cpuUs: number }>({
      op: 'drain', prefix, groupId, expected: expected.messages, timeoutMs, consumer: settings.consumer, partitionsConsumedConcurrently: settings.partitionsConsumedConcurrently
    }, timeoutMs + 30_000)
    const ms = r.lastAt - r.firstAt
    return {
      name: 'kafkajs consumer, does nothing',
      messagesPerSec: r.count / (ms / 1000),
      ms,
      messages: r.count,
      cpuUsPerMessage: r.cpuUs / r.count,
      error: r.count < expected.messages ? `${r.count} of ${expected.messages} messages` : undefined
    }
  } finally {
    await stop([child])
  }
}

/**
 * The latency floor: the do-nothing consumer (bench/servers/kafka-null.ts) at the same
 * steady rate, timing each message from its send to its batch: what Kafka and kafkajs take
 * on this machine before the gateway does anything.
 */
async function runLimitLatency (topics: BenchTopics, prefix: string, groupId: string, settings: KafkaSettings, track: Track): Promise<LatencyResult> {
  const child = new ChildChannel(fork(script('servers/kafka-null.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }), 'kafka-null-latency')
  track(child)
  const result: LatencyResult = { name: 'kafkajs consumer, does nothing', rate: settings.latencyRate, messages: 0, events: 0, received: 0, p50: NaN, p99: NaN, gaps: 0, wrongChannels: 0 }
  try {
    await child.event('ready', 30_000)
    await child.request({ op: 'listen', prefix, groupId, consumer: settings.consumer, partitionsConsumedConcurrently: settings.partitionsConsumedConcurrently }, 60_000)
    const warmupCount = Math.round((settings.latencyRate * settings.warmupMs) / 1000)
    await topics.steady(prefix, 0, settings.latencyRate, settings.warmupMs)
    const count = Math.round((settings.latencyRate * settings.latencyMs) / 1000)
    const expected = expectedOf(warmupCount, count)
    const timed = expected.messages - expected.dlq // poison carries no sentAt
    await child.request({ op: 'arm' }, 10_000)
    await topics.steady(prefix, warmupCount, settings.latencyRate, settings.latencyMs)
    const deadline = now() + 20_000
    while ((await child.request<{ count: number }>({ op: 'count' }, 10_000)).count < timed && now() < deadline) await sleep(50)
    const h = await child.request<{ bins: SparseHistogram, count: number }>({ op: 'stop' }, 30_000)
    const histogram = new Histogram()
    histogram.add(h.bins)
    Object.assign(result, { messages: timed, events: timed, received: h.count, p50: histogram.percentile(0.5), p99: histogram.percentile(0.99) })
    if (h.count < timed) result.error = `${h.count} of ${timed} messages read`
  } catch (err) {
    result.error = (err as Error).message
  } finally {
    await stop([child])
  }
  return result
}

async function runDrain (broker: KafkaBroker, prefix: string, groupId: string, redisPrefix: string, expected: Expected, settings: KafkaSettings, track: Track): Promise<DrainResult> {
  const secret = `bench-${process.pid}-${Date.now()}`
  const name = `gateway, ${broker} broker`
  const env: Record<string, string> = { BENCH_KAFKA_TOPIC_PREFIX: prefix, BENCH_KAFKA_GROUP_ID: groupId, BENCH_KAFKA_GATED: '1', ...brokerEnv(broker, redisPrefix) }
  const gateway = startGateway(`kafka-drain-${broker}`, secret, env, settings, track)
  let clients: Clients | undefined
  try {
    const { port } = await gateway.event<{ port: number }>('ready', 30_000)
    await untilReady(port)
    clients = await startClients(port, secret, track)
    await clients.channel.request({ op: 'arm', perChannel: expected.perChannel, timing: false }, 10_000)
    const timeoutMs = 60_000 + expected.messages
    const waiting = clients.channel.request<{ received: number, lastAt: number, gaps: number, wrongChannels: number, wrong: string[] }>({ op: 'wait', timeoutMs }, timeoutMs + 10_000)
    const cpuBefore = await cpuSplit(gateway, [clients.channel])
    const { openedAt } = await gateway.request<{ openedAt: number }>({ op: 'open' }, 10_000)
    const done = await waiting
    const cpuAfter = await cpuSplit(gateway, [clients.channel])
    const ms = done.lastAt - openedAt
    const dlq = await dlqCount(port)
    const problems = [
      done.received !== expected.events && `${done.received} of ${expected.events} events delivered`,
      done.gaps > 0 && `${done.gaps} offsets out of sequence`,
      dlq !== expected.dlq && `${dlq} of ${expected.dlq} poison messages dead-lettered`
    ].filter((p): p is string => typeof p === 'string')
    return {
      name,
      messagesPerSec: expected.messages / (ms / 1000),
      eventsPerSec: done.received / (ms / 1000),
      ms,
      messages: expected.messages,
      events: expected.events,
      delivered: done.received,
      wrongChannels: done.wrongChannels,
      wrong: done.wrong,
      gaps: done.gaps,
      dlq,
      cpuUsPerMessage: (cpuAfter.server - cpuBefore.server) / expected.messages,
      clientsCpuUsPerMessage: (cpuAfter.others - cpuBefore.others) / expected.messages,
      machineCpuUsPerMessage: (cpuAfter.machine - cpuBefore.machine) / expected.messages,
      error: problems.length > 0 ? problems.join('; ') : undefined
    }
  } catch (err) {
    return { name, messagesPerSec: 0, ms: 0, messages: expected.messages, error: (err as Error).message }
  } finally {
    if (clients !== undefined) await clients.channel.request({ op: 'close' }, 10_000).catch(() => {})
    clients?.channel.kill()
    await stop([gateway])
  }
}

/** What messages [from, from + count) of the mix must become (the values' sentAt does not change it). */
function expectedOf (from: number, count: number): Expected {
  const expected = emptyExpected()
  for (let i = from; i < from + count; i++) expect(expected, mixMessage(i, 0))
  return expected
}

async function runLatency (broker: KafkaBroker, topics: BenchTopics, prefix: string, groupId: string, redisPrefix: string, settings: KafkaSettings, track: Track): Promise<LatencyResult> {
  const secret = `bench-${process.pid}-${Date.now()}`
  const name = `gateway, ${broker} broker`
  const env: Record<string, string> = { BENCH_KAFKA_TOPIC_PREFIX: prefix, BENCH_KAFKA_GROUP_ID: groupId, ...brokerEnv(broker, redisPrefix) }
  const gateway = startGateway(`kafka-latency-${broker}`, secret, env, settings, track)
  let clients: Clients | undefined
  const result: LatencyResult = { name, rate: settings.latencyRate, messages: 0, events: 0, received: 0, p50: NaN, p99: NaN, gaps: 0, wrongChannels: 0 }
  try {
    const { port } = await gateway.event<{ port: number }>('ready', 30_000)
    await untilReady(port)
    clients = await startClients(port, secret, track)
    // A warm-up at the same rate, not timed: the first fetches and the JIT.
    const warmupCount = Math.round((settings.latencyRate * settings.warmupMs) / 1000)
    const warmup = expectedOf(0, warmupCount)
    await clients.channel.request({ op: 'arm', perChannel: warmup.perChannel, timing: false }, 10_000)
    const warmWait = clients.channel.request({ op: 'wait', timeoutMs: settings.warmupMs + 20_000 }, settings.warmupMs + 30_000)
    await topics.steady(prefix, 0, settings.latencyRate, settings.warmupMs)
    await warmWait

    const count = Math.round((settings.latencyRate * settings.latencyMs) / 1000)
    const expected = expectedOf(warmupCount, count)
    await clients.channel.request({ op: 'arm', perChannel: expected.perChannel, timing: true }, 10_000)
    const waiting = clients.channel.request<{ received: number, gaps: number, wrongChannels: number }>({ op: 'wait', timeoutMs: settings.latencyMs + 20_000 }, settings.latencyMs + 30_000)
    await topics.steady(prefix, warmupCount, settings.latencyRate, settings.latencyMs)
    const done = await waiting
    const h = await clients.channel.request<{ bins: SparseHistogram }>({ op: 'histogram' }, 10_000)
    const histogram = new Histogram()
    histogram.add(h.bins)
    Object.assign(result, {
      messages: expected.messages,
      events: expected.events,
      received: done.received,
      gaps: done.gaps,
      wrongChannels: done.wrongChannels,
      p50: histogram.percentile(0.5),
      p99: histogram.percentile(0.99)
    })
    if (done.received !== expected.events) result.error = `${done.received} of ${expected.events} events delivered`
  } catch (err) {
    result.error = (err as Error).message
  } finally {
    if (clients !== undefined) await clients.channel.request({ op: 'close' }, 10_000).catch(() => {})
    clients?.channel.kill()
    await stop([gateway])
  }
  return result
}

export async function runKafka (settings: KafkaSettings, track: Track, log: (line: string) => void): Promise<KafkaResult> {
  const result: KafkaResult = { settings, drains: [], latency: [], cleanup: [] }
  const run = `${process.pid}-${Date.now()}`
  const groups: string[] = []
  const redisPrefixes: Array<{ prefix: string, broker: KafkaBroker }> = []
  let topics: BenchTopics | undefined
  let release = (): void => {}
  try {
    if (settings.brokers.includes('redis')) await requireRedis(REDIS_URL)
    if (settings.brokers.includes('cluster')) await requireRedis(`redis://${REDIS_CLUSTER_NODES.split(',')[0]}`)
    release = await holdKafkaShared()
    topics = await BenchTopics.connect()
    const backlogPrefix = `rtg-bench-${run}.backlog.`
    await topics.create(backlogPrefix, settings.partitions)
    let t0 = now()
    const expected = await topics.backlog(backlogPrefix, 0, settings.backlog)
    result.produceMs = now() - t0
    result.expected = { messages: expected.messages, events: expected.events, dlq: expected.dlq }
    log(`kafka: backlog of ${expected.messages} messages (${expected.events} events, ${expected.dlq} poison) produced in ${(result.produceMs / 1000).toFixed(1)} s`)

    t0 = now()
    groups.push(`rtg-bench-${run}-null`)
    result.limit = await runLimit(backlogPrefix, groups.at(-1)!, expected, settings, track)
    log(`kafka: ${result.limit.name}: ${Math.round(result.limit.messagesPerSec)} msgs/s (${((now() - t0) / 1000).toFixed(1)} s)`)

    for (const broker of settings.brokers) {
      t0 = now()
      groups.push(`rtg-bench-${run}-${broker}`)
      const redisPrefix = `rtg-bench-${run}-${broker}:`
      if (broker !== 'memory') { redisPrefixes.push({ prefix: redisPrefix, broker }); liveKafkaPrefixes.add(redisPrefix) }
      const drain = await runDrain(broker, backlogPrefix, groups.at(-1)!, redisPrefix, expected, settings, track)
      result.drains.push(drain)
      log(`kafka: ${drain.name}: ${Math.round(drain.messagesPerSec)} msgs/s, ${Math.round(drain.eventsPerSec ?? 0)} events/s` +
        `${drain.error === undefined ? '' : ` (${drain.error})`} (${((now() - t0) / 1000).toFixed(1)} s)`)
    }
    {
      t0 = now()
      const prefix = `rtg-bench-${run}.latency-null.`
      await topics.create(prefix, settings.partitions)
      groups.push(`rtg-bench-${run}-null-latency`)
      const latency = await runLimitLatency(topics, prefix, groups.at(-1)!, settings, track)
      result.latency.push(latency)
      log(`kafka: latency, ${latency.name}: p50 ${latency.p50} ms, p99 ${latency.p99} ms${latency.error === undefined ? '' : ` (${latency.error})`} (${((now() - t0) / 1000).toFixed(1)} s)`)
    }
    for (const broker of settings.brokers) {
      t0 = now()
      const prefix = `rtg-bench-${run}.latency-${broker}.`
      await topics.create(prefix, settings.partitions)
      groups.push(`rtg-bench-${run}-${broker}-latency`)
      const redisPrefix = `rtg-bench-${run}-${broker}-latency:`
      if (broker !== 'memory') { redisPrefixes.push({ prefix: redisPrefix, broker }); liveKafkaPrefixes.add(redisPrefix) }
      const latency = await runLatency(broker, topics, prefix, groups.at(-1)!, redisPrefix, settings, track)
      result.latency.push(latency)
      log(`kafka: latency, ${latency.name}: p50 ${latency.p50} ms, p99 ${latency.p99} ms${latency.error === undefined ? '' : ` (${latency.error})`} (${((now() - t0) / 1000).toFixed(1)} s)`)
    }
  } catch (err) {
    result.error = (err as Error).message
  } finally {
    if (topics !== undefined) {
      await topics.delete().then(() => result.cleanup.push('topics deleted'), (err: unknown) => { result.error ??= `topic cleanup failed: ${(err as Error).message}` })
      await topics.deleteGroups(groups)
      await topics.close()
    }
    for (const { prefix, broker } of redisPrefixes) {
      const deleted = await deleteKafkaPrefix(prefix, broker).catch((err: unknown) => {
        result.error ??= `redis cleanup under ${prefix} failed: ${(err as Error).message}`
        return 0
      })
      result.cleanup.push(`${deleted} redis keys deleted under ${prefix}`)
      liveKafkaPrefixes.delete(prefix)
    }
    release()
  }
  return result
}
