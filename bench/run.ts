import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { buildTable, formatTable } from './report.js'
import { type ClusterBackend, type ClusterPeer, type ClusterResult, deleteLivePrefixes, INSTANCES, runCluster } from './cluster.js'
import { buildClusterTable, buildPeerTable, buildShardedTable, CLUSTER_HEADER, SHARDED_HEADER, shardedRoundRatios } from './cluster-report.js'
import type { ChildChannel } from './lib/ipc.js'
import { deleteKafkaPrefix, type KafkaBroker, type KafkaResult, type KafkaSettings, liveKafkaPrefixes, runKafka } from './kafka.js'
import { kafkaTables } from './kafka-report.js'
import { CONSUMER_FETCH, PARTITIONS_CONSUMED_CONCURRENTLY } from '../plugins/kafka.js'
import { deleteLiveTopics } from './lib/kafka-topics.js'
import { deletePrefix } from './lib/redis-prefix.js'
import { combineClusterRounds, combineRounds, roundOrder } from './rounds.js'
import { type FeatureName, FEATURES, type FeatureResult, featureText, liveFeaturePrefixes, runFeature } from './features.js'
import { runScenario, type ScenarioResult, SERVERS, type ServerName, type Settings } from './scenario.js'
import { deleteLiveStormPrefixes, runStorm, type StormResult } from './storm.js'
import { stormReport } from './storm-report.js'
import { buildSseTable, formatSseTable, README_WS_RSS_PER_CONNECTION, runSseScenario, SSE_SERVERS, type SseResult } from './sse.js'

/**
 * npm run bench [-- --quick] [--connections=1000,5000] [--only=gateway,ws-corked] [--rounds=N] [--churn=N] [--burst-deliveries=N] [--profile] [--no-http]
 *   [--sse] [--sse-connections=1000,5000] [--storm] [--storm-connections=2000,5000] [--storm-concurrency=N]
 *   [--cluster] [--no-cluster] [--redis-cluster] [--cluster-socketio[=redis,streams]] [--cluster-connections=1000,5000] [--no-kafka] [--kafka-backlog=N] [--kafka-brokers=memory,redis,cluster]
 *   [--only=idempotency,presence,presence-redis,presence-push,rewind] [--feature-connections=N]
 *
 * The cross-instance case (bench/cluster.ts: 3 gateways on one Redis) runs with
 * --cluster, with --only=cluster (it and its single-gateway baseline alone), and in
 * --quick at C = 1000 unless --no-cluster; with --cluster-socketio also against 3 Socket.IO
 * servers on @socket.io/redis-adapter and on @socket.io/redis-streams-adapter (`=redis` or
 * `=streams` for one of them). The Kafka ingest case (bench/kafka.ts) runs
 * last in every run unless --no-kafka; --only=kafka runs it alone. The feature costs
 * (bench/features.ts) run only when named in --only, after everything else. The reconnect
 * storm (bench/storm.ts) runs with --storm or --only=storm. The SSE case (bench/sse.ts)
 * runs with --sse, after the WebSocket case; --only=sse runs it alone.
 *
 * Runs every server in turn at every connection count, each under the same load from
 * separate load-generator processes, `--rounds` times (3 in a full run, 1 with --quick;
 * bench/rounds.ts), prints one table of medians and writes it, with every round, as JSON
 * under bench/results/. Never fails on timing: missed targets are printed, the exit code is 0.
 * It fails (exit 1) only when a scenario could not run at all.
 */
const args = process.argv.slice(2)
const flag = (name: string) => args.includes(`--${name}`)
const option = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1]

const quick = flag('quick')
const ROOT = fileURLToPath(new URL('../../../', import.meta.url)) // dist/.bench/bench/run.js → repository
const RESULTS = `${ROOT}bench/results/`
const FD_LIMITED_MAX = 19_000

const only = option('only')?.split(',')
const servers = (only ?? [...SERVERS]).filter((s): s is ServerName => (SERVERS as readonly string[]).includes(s))
const isFeature = (o: string): o is FeatureName => (FEATURES as readonly string[]).includes(o)
const features = (only ?? []).filter(isFeature)
// Kafka, the storm and the feature costs alone: no server-by-server table.
const kafkaOnly = only !== undefined && only.every((o) => o === 'kafka' || o === 'storm' || isFeature(o))
const sseOnly = only !== undefined && only.every((o) => o === 'sse')
const sseOn = flag('sse') || only?.includes('sse') === true
const stormOn = flag('storm') || only?.includes('storm') === true
/** --redis-cluster: the cross-instance case also on the local Redis Cluster (scripts/redis-cluster.sh). */
const shardedOn = flag('redis-cluster')
/** --cluster-socketio[=redis,streams]: the cross-instance case also against Socket.IO on a Redis adapter (issue 18). */
const socketIoPeers: ClusterPeer[] = flag('cluster-socketio')
  ? ['socketio-redis', 'socketio-streams']
  : (option('cluster-socketio')?.split(',') ?? []).map((a) => `socketio-${a}`).filter((p): p is ClusterPeer => p === 'socketio-redis' || p === 'socketio-streams')
const clusterOn = !flag('no-cluster') && (flag('cluster') || shardedOn || socketIoPeers.length > 0 || (quick && !kafkaOnly && !sseOnly) || only?.includes('cluster') === true)
const kafkaOn = !flag('no-kafka') && (only === undefined || only.includes('kafka'))
const countsOf = (text: string) => text.split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0)
const defaultCounts = option('connections') ?? (quick ? '1000,2000' : `1000,5000,10000,${FD_LIMITED_MAX}`)
const connectionCounts = kafkaOnly || sseOnly ? [] : countsOf(defaultCounts)
const sseCounts = sseOn ? countsOf(option('sse-connections') ?? defaultCounts) : []
const stormCounts = stormOn
  ? (option('storm-connections') ?? (quick ? '2000,5000' : `2000,5000,10000,${FD_LIMITED_MAX}`)).split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0)
  : []
const clusterCounts = clusterOn
  ? (option('cluster-connections')?.split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0) ?? (quick ? [1000] : connectionCounts))
  : []

function ephemeralPorts (): number {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
    return high - low + 1
  } catch {
    return 16_384
  }
}

const featureConnections = Number(option('feature-connections') ?? (quick ? 2000 : 10_000))
const maxC = Math.max(0, ...connectionCounts, ...clusterCounts, ...sseCounts, ...(features.length > 0 ? [featureConnections] : []))
const CHURN_CONNECTIONS = Number(option('churn') ?? 3000)
const settings: Settings = {
  burstDeliveries: Number(option('burst-deliveries') ?? (quick ? 60_000 : 300_000)),
  reps: quick ? 2 : 3,
  rounds: Math.max(1, Number(option('rounds') ?? (quick ? 1 : 3)) || 1),
  churnConnections: CHURN_CONNECTIONS,
  latencyDeliveriesPerSec: 20_000,
  // 15 s: at 10k, 30 broadcasts. With 10, one slow broadcast decided the p99 (bench/README.md).
  latencyMs: quick ? 1500 : 15_000,
  settleMs: quick ? 300 : 1000,
  // Each process stays well under the 20000-descriptor limit.
  loadProcesses: Math.max(2, Math.ceil(maxC / 15_000)),
  connectConcurrency: 50,
  sourceAddresses: Math.ceil((maxC + CHURN_CONNECTIONS) / (ephemeralPorts() * 0.8)),
  profileDir: flag('profile') ? `${RESULTS}profiles` : undefined,
  noHttp: flag('no-http')
}

// Every child is killed when the run ends, however it ends.
const children = new Set<ChildChannel>()
const killAll = () => { for (const c of children) c.kill() }
process.on('exit', killAll)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    killAll()
    // An interrupted cluster or Kafka run still deletes its Redis keys and topics (bounded: 15 s at most).
    void Promise.all([deleteLivePrefixes(), deleteLiveStormPrefixes(), deleteLiveTopics().catch(() => {}),
      ...[...liveKafkaPrefixes].map(async (p) => await deleteKafkaPrefix(p)),
      ...[...liveFeaturePrefixes].map((p) => deletePrefix('redis://127.0.0.1:6379', p).catch(() => 0))])
      .finally(() => process.exit(130))
  })
}

const log = (line: string) => process.stderr.write(`[bench] ${line}\n`)
const loadBefore = loadavg()
const startedAt = new Date()
// The storm and the Socket.IO peers (opt-in) have budgets of their own on top in --quick; --rounds multiplies the rest.
const deadline = Date.now() + (quick ? (140_000 + 60_000 * socketIoPeers.length) * settings.rounds + (stormOn ? 240_000 : 0) : settings.rounds * 25 * 60_000)
log(`${quick ? 'quick' : 'full'} run: C = ${connectionCounts.join(', ')}; servers: ${servers.join(', ') || 'none'}; ${settings.rounds} round(s); ` +
  `${clusterOn ? `cluster of ${INSTANCES} at C = ${clusterCounts.join(', ')}; ` : ''}` +
  `${sseOn ? `SSE at C = ${sseCounts.join(', ')}; ` : ''}${settings.loadProcesses} load processes; load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')}`)

const track = (c: ChildChannel) => {
  children.add(c)
  c.child.once('exit', () => children.delete(c))
}
const runs: Array<ScenarioResult & { round: number }> = []
const clusterRuns: Array<ClusterResult & { round: number }> = []
async function timed<R extends { error?: string }> (name: string, connections: number, run: () => Promise<R>): Promise<R | undefined> {
  if (Date.now() > deadline) {
    log(`time budget spent: skipping ${name} at C=${connections}`)
    return undefined
  }
  const t0 = Date.now()
  const result = await run()
  log(`${name} C=${connections}: ${result.error === undefined ? 'done' : `FAILED: ${result.error}`} in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  return result
}
for (const connections of [...new Set([...connectionCounts, ...clusterCounts])].sort((a, b) => a - b)) {
  const withCluster = clusterCounts.includes(connections)
  // The cluster is compared with the single gateway at the same C, so that one always runs.
  const here = connectionCounts.includes(connections) ? servers : []
  const scenarios = withCluster && !here.includes('gateway') ? ['gateway' as const, ...here] : here
  for (let round = 0; round < settings.rounds; round++) {
    for (const server of roundOrder(scenarios, round)) {
      const name = settings.rounds > 1 ? `${server} (round ${round + 1} of ${settings.rounds})` : server
      const result = await timed(name, connections, () => runScenario(server, connections, settings, track))
      if (result !== undefined) runs.push({ ...result, round })
    }
  }
  if (withCluster) {
    // The multi-instance cases take turns too, and their figures are medians of the rounds.
    const cases: Array<{ name: string, backend: ClusterBackend, peer: ClusterPeer }> = [
      { name: `gateway-cluster ×${INSTANCES}`, backend: 'redis', peer: 'gateway' },
      ...(shardedOn ? [{ name: `gateway-cluster ×${INSTANCES} on a Redis Cluster`, backend: 'redis-cluster' as const, peer: 'gateway' as const }] : []),
      ...socketIoPeers.map((peer) => ({ name: `${peer} ×${INSTANCES}`, backend: 'redis' as const, peer }))
    ]
    for (let round = 0; round < settings.rounds; round++) {
      for (const c of roundOrder(cases, round)) {
        const name = settings.rounds > 1 ? `${c.name} (round ${round + 1} of ${settings.rounds})` : c.name
        const result = await timed(name, connections, () => runCluster(connections, settings, track, c.backend, c.peer))
        if (result !== undefined) clusterRuns.push({ ...result, round })
      }
    }
  }
}
const clusters = combineClusterRounds(clusterRuns)
const sseRuns: Array<SseResult & { round: number }> = []
for (const connections of sseCounts) {
  for (let round = 0; round < settings.rounds; round++) {
    for (const server of roundOrder(SSE_SERVERS, round)) {
      const name = settings.rounds > 1 ? `${server} (round ${round + 1} of ${settings.rounds})` : server
      const result = await timed(name, connections, () => runSseScenario(server, connections, settings, track))
      if (result !== undefined) sseRuns.push({ ...result, round })
    }
  }
}
const kafkaSettings: KafkaSettings = {
  backlog: Number(option('kafka-backlog') ?? (quick ? 50_000 : 200_000)),
  partitions: 4,
  latencyRate: 2000,
  latencyMs: quick ? 3000 : 15_000,
  warmupMs: quick ? 1000 : 2000,
  consumer: CONSUMER_FETCH,
  partitionsConsumedConcurrently: PARTITIONS_CONSUMED_CONCURRENTLY,
  brokers: (option('kafka-brokers') ?? 'memory,redis').split(',').filter((b): b is KafkaBroker => b === 'memory' || b === 'redis' || b === 'cluster'),
  profileDir: settings.profileDir
}
const storms: StormResult[] = []
for (const connections of stormCounts) {
  const result = await timed('reconnect storm', connections, () => runStorm(connections, settings, {
    concurrency: Number(option('storm-concurrency') ?? 250),
    calmMs: quick ? 1000 : 3000
  }, track, log))
  if (result !== undefined) storms.push(result)
}
let kafka: KafkaResult | undefined
if (kafkaOn) {
  const t0 = Date.now()
  kafka = await runKafka(kafkaSettings, track, log)
  log(`kafka ingest: ${kafka.error === undefined ? 'done' : `FAILED: ${kafka.error}`} in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
}
const featureResults: FeatureResult[] = []
for (const name of features) {
  const t0 = Date.now()
  const result = await runFeature(name, settings, { quick, connections: featureConnections, rounds: Number(option('rounds') ?? 2) || 2 }, track, log)
  log(`feature ${name}: ${result.error === undefined ? 'done' : `FAILED: ${result.error}`} in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  featureResults.push(result)
}
const loadAfter = loadavg()

const results = combineRounds(runs)
const { rows, checks } = buildTable(results)
// The targets checked on each round alone: a median that meets a target is shown with the rounds that did not.
const roundChecks = Array.from({ length: settings.rounds }, (_, round) =>
  buildTable(runs.filter((r) => r.round === round)).checks.map((c) => ({ ...c, round })))
const atMax = results.find((r) => r.server === 'gateway' && r.connections === maxC)
const summary = [
  `load average before ${loadBefore.map((l) => l.toFixed(2)).join(' ')}, after ${loadAfter.map((l) => l.toFixed(2)).join(' ')} ` +
    `(${cpus().length} cores; other work on the machine skews every figure)`,
  ...checks.filter((c) => !c.met).map((c) => `target missed at C=${c.connections}: ${c.metric.trim()} gateway/${c.peer} = ${c.ratio.toFixed(2)}× (target ${c.limit}×)`),
  ...(settings.rounds > 1 ? roundMisses() : [])
]
if (atMax !== undefined) {
  const clean = atMax.connected === atMax.connections && atMax.dropped === 0 && atMax.error === undefined
  summary.push(`${clean ? 'ok' : 'target missed'}: gateway held ${atMax.connected} of ${atMax.connections} connections at C=${maxC}, ${atMax.dropped} dropped`)
  if (atMax.memory !== undefined) {
    const gib = (atMax.memory.rssPerConnection * 1e6) / 1024 ** 3
    summary.push(`${gib <= 8 ? 'ok' : 'target missed'}: 1M gateway connections on paper = ${gib.toFixed(2)} GiB RSS (target ≤ 8 GiB)`)
  }
}
/** Per target: the rounds in which it was missed, with every round's ratio. */
function roundMisses (): string[] {
  return checks.flatMap((c) => {
    const same = roundChecks.flat().filter((r) => r.connections === c.connections && r.metric === c.metric && r.peer === c.peer)
    const missed = same.filter((r) => !r.met)
    if (missed.length === 0) return []
    return [`${missed.length} of ${same.length} rounds missed at C=${c.connections}: ${c.metric.trim()} gateway/${c.peer} ` +
      `${same.map((r) => `${r.ratio.toFixed(2)}×`).join(', ')} (median of rounds ${c.ratio.toFixed(2)}×, target ${c.limit}×)`]
  })
}
if (results.length > 0) {
  process.stdout.write(`\n${formatTable(rows)}\n\n${settings.rounds > 1 ? `Figures are medians of ${settings.rounds} rounds; ratios are of those medians. ` : ''}Ratios are gateway ÷ peer: above 1 is better for msgs/s and conn/s, below 1 is better for memory, CPU and latency.\n` +
  'Fan-out and latency rows compare the gateway fed through its broker API; the indented rows feed it by HTTP POST /realtime/publish.\n' +
  summary.map((s) => `${s}\n`).join(''))
}
const clusterRows = buildClusterTable(results, clusters)
if (clusterRows.length > 0) {
  process.stdout.write(`\nCross-instance: ${INSTANCES} gateways on one Redis vs one gateway with the memory broker, same clients and load.\n` +
    `${formatTable(clusterRows, CLUSTER_HEADER)}\n` +
    'Ratios are cluster ÷ single: above 1 is better for msgs/s, below 1 is better for CPU (all instances summed) and latency.\n')
}
const shardedRows = buildShardedTable(clusters)
if (shardedRows.length > 0) {
  process.stdout.write(`\nSharded: the same ${INSTANCES} gateways, clients and load on one Redis and on a Redis Cluster of 3 masters (sharded pub/sub).\n` +
    `${formatTable(shardedRows, SHARDED_HEADER)}\n` +
    'Ratios are cluster ÷ one Redis: above 1 is better for msgs/s, below 1 is better for CPU and latency.\n' +
    (settings.rounds > 1 ? `Figures are medians of ${settings.rounds} rounds. ${shardedRoundRatios(clusterRuns)}\n` : ''))
}

const storm = storms.length === 0 ? undefined : stormReport(storms, cpus().length)
if (storm !== undefined) {
  process.stdout.write('\nReconnect storm: one gateway on Redis, every client on user:<id> and 2 shared channels, publishing throughout; ' +
    'every socket dropped at once (drop: by the clients; restart: the gateway restarted), every client resuming with since.\n' +
    `${storm.text}\nratio = resumes/s ÷ bare ws's plain connects/s, same load processes and concurrency. ` +
    'CPU µs each: the server process\'s CPU time (user + system) per connect or resume, live fan-out during the storm included; bare ws\'s per connect in brackets. ' +
    `load average before ${loadBefore.map((l) => l.toFixed(2)).join(' ')}, after ${loadAfter.map((l) => l.toFixed(2)).join(' ')}\n` +
    storm.ceilings.map((c) => `${c}\n`).join('') +
    storm.misses.map((m) => `${m}\n`).join(''))
}
const peerTable = buildPeerTable(clusters)
if (peerTable.rows.length > 0) {
  process.stdout.write(`\nCross-instance against Socket.IO: ${INSTANCES} gateways on one Redis vs ${INSTANCES} Socket.IO servers on a Redis adapter, same clients and load, published through instance 0.\n` +
    `${formatTable(peerTable.rows, peerTable.header)}\n` +
    'Ratios are gateway ÷ Socket.IO: above 1 is better for msgs/s, below 1 is better for CPU (all instances summed) and latency.\n' +
    peerTable.checks.filter((c) => !c.met).map((c) => `target missed at C=${c.connections}: ${c.metric} gateway/sio+redis = ${c.ratio.toFixed(2)}× (target ${c.limit}×)\n`).join(''))
}
// The SSE medians go through the WebSocket case's combineRounds (it reads the server name only as a key).
const sseResults = combineRounds(sseRuns as unknown as Array<ScenarioResult & { round: number }>) as unknown as SseResult[]
const sseTable = buildSseTable(sseResults, (c) => {
  const ws = results.find((r) => r.server === 'gateway' && r.connections === c)?.memory?.rssPerConnection
  if (ws !== undefined) return { bytes: ws, from: 'this run' }
  const readme = README_WS_RSS_PER_CONNECTION[c]
  return readme === undefined ? undefined : { bytes: readme, from: 'README' }
})
if (sseTable.rows.length > 0) {
  process.stdout.write('\nSSE: the gateway\'s GET /sse against bare node:http SSE servers and better-sse, same clients and load.\n' +
    `${formatSseTable(sseTable.rows)}\n` +
    'Ratios are gateway ÷ peer: above 1 is better for msgs/s, below 1 is better for memory, CPU and latency. The HTTP-fed rows compare the gateway fed by POST /realtime/publish with the peers fed by their own loop.\n' +
    '"gw ws RSS" is the gateway\'s WebSocket RSS per 10k idle connections at the same C (from this run, else from bench/README.md\'s latest full run).\n' +
    (results.length === 0 ? `load average before ${loadBefore.map((l) => l.toFixed(2)).join(' ')}, after ${loadAfter.map((l) => l.toFixed(2)).join(' ')} (${cpus().length} cores)\n` : '') +
    sseTable.checks.filter((c) => !c.met).map((c) => `target missed at C=${c.connections}: ${c.metric.trim()} gateway/${c.peer} = ${c.ratio.toFixed(2)}× (target ${c.limit}×)\n`).join(''))
}

const kafkaReport = kafka === undefined ? undefined : kafkaTables(kafka)
if (kafkaReport !== undefined) {
  process.stdout.write(`\n${kafkaReport.text}\n` +
    kafkaReport.checks.filter((c) => !c.met).map((c) => `target missed: ${c.what} = ${c.value.toFixed(2)} (target ${c.limit})\n`).join(''))
}

if (featureResults.length > 0) {
  process.stdout.write(featureResults.map((r) => `\n${featureText(r)}\n`).join('') +
    `load average before ${loadBefore.map((l) => l.toFixed(2)).join(' ')}, after ${loadAfter.map((l) => l.toFixed(2)).join(' ')} (${cpus().length} cores, shared)\n`)
}

mkdirSync(RESULTS, { recursive: true })
const file = `${RESULTS}${startedAt.toISOString().replace(/[:.]/g, '-')}${quick ? '-quick' : ''}.json`
writeFileSync(file, JSON.stringify({
  startedAt: startedAt.toISOString(),
  command: `npm run bench -- ${args.join(' ')}`.trim(),
  node: process.version,
  cpus: cpus().length,
  loadAverage: { before: loadBefore, after: loadAfter },
  settings,
  table: rows,
  targets: checks,
  roundTargets: roundChecks.flat(),
  results,
  rounds: runs,
  cluster: { table: clusterRows, socketIo: peerTable, results: clusters },
  sse: sseRuns.length === 0 ? undefined : { table: sseTable.rows, targets: sseTable.checks, results: sseResults, rounds: sseRuns },
  kafka: kafka === undefined ? undefined : { ...kafka, targets: kafkaReport?.checks },
  features: featureResults.length === 0 ? undefined : featureResults,
  storm: storms.length === 0 ? undefined : { results: storms, targets: storm?.misses }
}, null, 2) + '\n')
log(`results written to ${file}`)
killAll()
const kafkaFailed = kafka !== undefined && (kafka.error !== undefined || kafka.limit === undefined || kafka.drains.some((d) => d.messagesPerSec === 0))
process.exit([...results, ...clusters, ...sseResults, ...featureResults, ...storms].some((r) => r.error !== undefined) || kafkaFailed ? 1 : 0)
