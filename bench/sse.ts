import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { sleep } from './lib/clock.js'
import { ChildChannel } from './lib/ipc.js'
import { formatTable, problemsOf, rate } from './report.js'
import { connectClients, droppedClients, measureFanout, type ScenarioResult, type Settings, shutdown } from './scenario.js'

/**
 * The SSE case (issue 18): the gateway's GET /sse against a bare node:http SSE server
 * (naive: one res.write per stream and event; corked: sockets corked around the loop,
 * one pre-built Buffer for every stream) and better-sse, same clients (bench/sse-load.ts),
 * same steps as the WebSocket case (bench/scenario.ts): warm-up batch, churn, idle memory,
 * bursts, steady latency; the gateway also fed over HTTP. Every server sends the gateway's
 * bytes per event (bench/servers/sse-event.ts).
 */
export const SSE_SERVERS = ['gateway-sse', 'sse-naive', 'sse-corked', 'better-sse'] as const
export type SseServerName = typeof SSE_SERVERS[number]
export type SseResult = Omit<ScenarioResult, 'server'> & { server: SseServerName }

type Track = (c: ChildChannel) => void
interface Mem { rss: number, heapUsed: number }
const script = (name: string) => fileURLToPath(new URL(name, import.meta.url))
const WARMUP_CONNECTIONS = 100

function startSseServer (server: SseServerName, secret: string, settings: Settings, track: Track): ChildChannel {
  const file = server === 'gateway-sse' ? 'servers/gateway.js' : server === 'better-sse' ? 'servers/better-sse.js' : 'servers/bare-sse.js'
  const profile = settings.profileDir !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${settings.profileDir}/${server}`] : []
  const child = fork(script(file), server === 'sse-corked' ? ['corked'] : ['naive'], {
    execArgv: ['--expose-gc', ...profile],
    env: { ...process.env, BENCH_JWT_SECRET: secret },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  const channel = new ChildChannel(child, server)
  track(channel)
  return channel
}

function startSseLoads (settings: Settings, track: Track): ChildChannel[] {
  return Array.from({ length: settings.loadProcesses }, (_, i) => {
    const load = new ChildChannel(fork(script('sse-load.js'), [], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }), `sse-load-${i}`)
    track(load)
    return load
  })
}

/** One SSE server at one C: the steps and bounds of runScenario (bench/scenario.ts). */
export async function runSseScenario (server: SseServerName, connections: number, settings: Settings, track: Track): Promise<SseResult> {
  const secret = `bench-${process.pid}-${Date.now()}`
  const srv = startSseServer(server, secret, settings, track)
  let loads: ChildChannel[] = []
  const result: SseResult = { server, connections, connected: 0, connectErrors: {}, connectPerSec: 0, dropped: 0 }
  // connectClients speaks bench/load.ts's kinds; sse-load.ts reads 'gateway' and anything else as a bare stream.
  const kind = (server === 'gateway-sse' ? 'gateway' : 'sse') as 'gateway'
  try {
    const { port } = await srv.event<{ port: number }>('ready', 30_000)
    loads = startSseLoads(settings, track)
    const url = `http://127.0.0.1:${port}/sse`
    const warmupCount = Math.min(WARMUP_CONNECTIONS, Math.floor(connections / 10))
    const warmup = await connectClients(loads, kind, [{ url, count: warmupCount }], settings, secret)
    await sleep(settings.settleMs)
    const beforeChurn = await srv.request<Mem>({ op: 'mem' }, 30_000)
    const churn = await connectClients(loads, kind, [{ url, count: settings.churnConnections }], settings, secret, connections, 'churn')
    if (churn.connected < settings.churnConnections) throw new Error(`warm-up churn: ${churn.connected} of ${settings.churnConnections} connected: ${JSON.stringify(churn.errors)}`)
    await sleep(settings.settleMs)
    const before = await srv.request<Mem>({ op: 'mem' }, 30_000)
    const connect = await connectClients(loads, kind, [{ url, count: connections - warmupCount }], settings, secret, warmupCount)
    result.connected = warmup.connected + connect.connected
    result.connectPerSec = connect.perSec
    result.connectErrors = connect.errors
    for (const [k, n] of Object.entries(warmup.errors)) result.connectErrors[k] = (result.connectErrors[k] ?? 0) + n
    if (connect.connected === 0) throw new Error(`no client connected: ${JSON.stringify(result.connectErrors)}`)

    await sleep(settings.settleMs)
    const after = await srv.request<Mem>({ op: 'mem' }, 30_000)
    result.memory = {
      rssPerConnection: (after.rss - beforeChurn.rss) / connect.connected,
      heapPerConnection: (after.heapUsed - before.heapUsed) / connect.connected,
      before: { rss: beforeChurn.rss, heapUsed: before.heapUsed },
      after: { rss: after.rss, heapUsed: after.heapUsed }
    }
    const httpPort = server === 'gateway-sse' && settings.noHttp !== true ? port : undefined
    const { httpLastFailure, ...measured } = await measureFanout([srv], srv, loads, settings, result.connected, secret, httpPort)
    Object.assign(result, measured)
    if ((result.httpFailures ?? 0) > 0) result.connectErrors[`http publish: ${httpLastFailure ?? ''}`] = result.httpFailures ?? 0
    result.dropped = await droppedClients(loads)
    return result
  } catch (err) {
    result.error = (err as Error).message
    return result
  } finally {
    await shutdown([srv], loads)
  }
}

/**
 * The gateway's WebSocket RSS per idle connection (bytes) from the latest full run in
 * bench/README.md (session 4), for the ≤ 2× target when the WS case did not run.
 */
export const README_WS_RSS_PER_CONNECTION: Record<number, number> = {
  1000: (43.6 * 1024 * 1024) / 10_000,
  5000: (38.8 * 1024 * 1024) / 10_000,
  10000: (36.1 * 1024 * 1024) / 10_000,
  19000: (42.8 * 1024 * 1024) / 10_000
}

type Direction = 'higher' | 'lower'
interface Metric {
  name: string
  direction: Direction
  gateway: (r: SseResult) => number | undefined
  peer: (r: SseResult) => number | undefined
  format: (v: number) => string
  targets?: Array<{ peer: SseServerName | 'gateway-ws', limit: number }>
}
const per10kMB = (bytes: number) => (bytes * 10_000) / (1024 * 1024)
const fixed = (digits: number) => (v: number) => v.toFixed(digits)

const METRICS: Metric[] = [
  { name: 'connect rate, streams/s', direction: 'higher', format: rate, gateway: (r) => r.connectPerSec || undefined, peer: (r) => r.connectPerSec || undefined },
  { name: 'heap per 10k idle streams, MB', direction: 'lower', format: fixed(1), gateway: (r) => r.memory && per10kMB(r.memory.heapPerConnection), peer: (r) => r.memory && per10kMB(r.memory.heapPerConnection) },
  {
    name: 'RSS per 10k idle streams, MB',
    direction: 'lower',
    format: fixed(1),
    gateway: (r) => r.memory && per10kMB(r.memory.rssPerConnection),
    peer: (r) => r.memory && per10kMB(r.memory.rssPerConnection),
    targets: [{ peer: 'sse-naive', limit: 1.0 }, { peer: 'gateway-ws', limit: 2.0 }]
  },
  {
    name: 'fan-out, delivered msgs/s',
    direction: 'higher',
    format: rate,
    gateway: (r) => r.fanout?.messagesPerSec,
    peer: (r) => r.fanout?.messagesPerSec,
    targets: [{ peer: 'sse-corked', limit: 1.0 }]
  },
  {
    name: '  gateway fed by HTTP publish',
    direction: 'higher',
    format: rate,
    gateway: (r) => r.fanoutHttp?.messagesPerSec,
    peer: (r) => r.fanout?.messagesPerSec,
    targets: [{ peer: 'sse-corked', limit: 1.0 }]
  },
  { name: 'server CPU per delivered msg, µs', direction: 'lower', format: fixed(2), gateway: (r) => r.fanout?.cpuUsPerMessage, peer: (r) => r.fanout?.cpuUsPerMessage },
  { name: 'latency p50, ms', direction: 'lower', format: fixed(2), gateway: (r) => r.latency?.p50, peer: (r) => r.latency?.p50 },
  { name: 'latency p99, ms', direction: 'lower', format: fixed(2), gateway: (r) => r.latency?.p99, peer: (r) => r.latency?.p99 },
  { name: '  p50 gateway fed by HTTP', direction: 'lower', format: fixed(2), gateway: (r) => r.latencyHttp?.p50, peer: (r) => r.latency?.p50 },
  { name: '  p99 gateway fed by HTTP', direction: 'lower', format: fixed(2), gateway: (r) => r.latencyHttp?.p99, peer: (r) => r.latency?.p99 }
]

const PEERS: SseServerName[] = ['sse-naive', 'sse-corked', 'better-sse']
export const SSE_HEADER = ['C', 'metric', 'gateway /sse', 'sse naive', 'sse corked', 'better-sse', 'gw/naive', 'gw/corked', 'gw/better', 'gw ws RSS', 'targets']
export interface SseCheck { connections: number, metric: string, peer: string, limit: number, ratio: number, met: boolean }

/**
 * The SSE table: ratios gateway ÷ peer. `wsRss` gives, per C, the gateway's WebSocket RSS
 * per idle connection (bytes) from this run, or else from README_WS_RSS_PER_CONNECTION.
 */
export function buildSseTable (results: SseResult[], wsRss: (c: number) => { bytes: number, from: string } | undefined): { rows: string[][], checks: SseCheck[] } {
  const rows: string[][] = []
  const checks: SseCheck[] = []
  for (const c of [...new Set(results.map((r) => r.connections))]) {
    const of = (s: SseServerName) => results.find((r) => r.connections === c && r.server === s)
    const gw = of('gateway-sse')
    const ws = wsRss(c)
    for (const metric of METRICS) {
      const gwValue = gw === undefined ? undefined : metric.gateway(gw)
      const cell = (v: number | undefined) => v === undefined || !Number.isFinite(v) ? '–' : metric.format(v)
      const peers = PEERS.map((p) => { const r = of(p); return r === undefined ? undefined : metric.peer(r) })
      const ratios = peers.map((p) => gwValue === undefined || p === undefined || p === 0 ? undefined : gwValue / p)
      const isRss = metric.name.startsWith('RSS')
      const wsValue = isRss && ws !== undefined ? per10kMB(ws.bytes) : undefined
      const marks: string[] = []
      for (const target of metric.targets ?? []) {
        const ratio = target.peer === 'gateway-ws'
          ? (gwValue === undefined || wsValue === undefined ? undefined : gwValue / wsValue)
          : ratios[PEERS.indexOf(target.peer)]
        if (ratio === undefined || !Number.isFinite(ratio)) continue
        const met = metric.direction === 'higher' ? ratio >= target.limit : ratio <= target.limit
        const peer = target.peer === 'gateway-ws' ? `gateway-ws (${ws?.from ?? ''})` : target.peer
        checks.push({ connections: c, metric: metric.name, peer, limit: target.limit, ratio, met })
        marks.push(`${met ? 'ok' : 'TARGET MISSED'} ${metric.direction === 'higher' ? '≥' : '≤'}${target.limit}×${target.peer === 'gateway-ws' ? 'ws' : target.peer.replace('sse-', '')} (${ratio.toFixed(2)}×)`)
      }
      rows.push([String(c), metric.name, cell(gwValue), ...peers.map(cell),
        ...ratios.map((r) => r === undefined || !Number.isFinite(r) ? '–' : `${r.toFixed(2)}×`),
        wsValue === undefined ? '' : `${wsValue.toFixed(1)} (${ws?.from ?? ''})`, marks.join(', ')])
    }
    const problems = results.filter((r) => r.connections === c).map((r) => problemsOf(r)).filter((p) => p !== '')
    if (problems.length > 0) rows.push([String(c), 'problems', problems.join('; '), '', '', '', '', '', '', '', ''])
  }
  return { rows, checks }
}

export const formatSseTable = (rows: string[][]): string => formatTable(rows, SSE_HEADER)
