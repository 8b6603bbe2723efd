import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { mintToken } from '../lib/auth/token.js'
import { now, sleep } from './lib/clock.js'
import { HttpPublisher } from './lib/http-publisher.js'
import { ChildChannel } from './lib/ipc.js'
import { burstReps, type Fanout, type Latency, measureBurst, measureLatency, sum } from './measure.js'
import { BENCH_CHANNEL } from './servers/control.js'

export type { Fanout, Latency } from './measure.js'
export const SERVERS = ['gateway', 'ws-naive', 'ws-corked', 'socketio'] as const
export type ServerName = typeof SERVERS[number]

export interface Settings {
  /** Deliveries per measured burst (messages × clients), so bursts last about as long at every C. */
  burstDeliveries: number
  reps: number
  /** Deliveries per second during the latency run: well under what the naive bare server sustains. */
  latencyDeliveriesPerSec: number
  latencyMs: number
  settleMs: number
  loadProcesses: number
  connectConcurrency: number
  /** Clients that connect, subscribe and close before the idle-memory baseline (the warm-up churn). */
  churnConnections: number
  /** How often each server runs at each C; the table shows the medians. */
  rounds: number
  /** Source addresses 127.0.0.1…n for the clients, when one runs short of ephemeral ports. */
  sourceAddresses: number
  profileDir?: string
  /** Skips the gateway's HTTP-fed runs (to profile the broker path alone). */
  noHttp?: boolean
}

/** What the servers' `mem` op answers: after GC; `spaces` is used bytes per V8 heap space. */
interface Mem { rss: number, heapUsed: number, spaces: Record<string, number> }
type Measured = Pick<ScenarioResult, 'fanout' | 'fanoutHttp' | 'latency' | 'latencyHttp' | 'httpFailures'> & { httpLastFailure?: string }

export interface ScenarioResult {
  server: ServerName
  connections: number
  connected: number
  connectErrors: Record<string, number>
  connectPerSec: number
  memory?: {
    rssPerConnection: number
    heapPerConnection: number
    /** The heap figure by V8 space: a large code_space share is JIT work, not connection state. */
    heapSpacesPerConnection?: Record<string, number>
    /** Absent from a median of rounds. */
    before?: Pick<Mem, 'rss' | 'heapUsed'>
    after?: Pick<Mem, 'rss' | 'heapUsed'>
  }
  fanout?: Fanout
  fanoutHttp?: Fanout
  latency?: Latency
  latencyHttp?: Latency
  dropped: number
  httpFailures?: number
  error?: string
}

type Track = (c: ChildChannel) => void
type ClientKind = 'gateway' | 'ws' | 'socketio'
const script = (name: string) => fileURLToPath(new URL(name, import.meta.url))

/** One server process; `env` and `label` let the cluster case start several gateways on Redis. */
export function startServer (server: ServerName, secret: string, settings: Settings, track: Track, env: Record<string, string> = {}, label: string = server): ChildChannel {
  const file = server === 'gateway' ? 'servers/gateway.js' : server === 'socketio' ? 'servers/socketio.js' : 'servers/bare-ws.js'
  const profile = settings.profileDir !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${settings.profileDir}/${label}`] : []
  const child = fork(script(file), server === 'ws-corked' ? ['corked'] : ['naive'], {
    execArgv: ['--expose-gc', ...profile],
    env: { ...process.env, ...env, BENCH_JWT_SECRET: secret },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  const channel = new ChildChannel(child, label)
  track(channel)
  return channel
}

export function startLoads (settings: Settings, track: Track): ChildChannel[] {
  return Array.from({ length: settings.loadProcesses }, (_, i) => {
    const load = new ChildChannel(fork(script('load.js'), [], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }), `load-${i}`)
    track(load)
    return load
  })
}

/** Connections opened before the idle-memory baseline (at most a tenth of C). */
const WARMUP_CONNECTIONS = 100
/**
 * Opens `count` clients on each target URL, every target's share split evenly over the
 * load processes; `connectConcurrency` handshakes in flight per load process in all.
 */
export async function connectClients (
  loads: ChildChannel[], kind: ClientKind, targets: Array<{ url: string, count: number }>, settings: Settings, secret: string,
  firstIndex = 0, op: 'connect' | 'churn' = 'connect', extra: Record<string, unknown> = {}
): Promise<{ connected: number, perSec: number, errors: Record<string, number> }> {
  const total = sum(targets.map((t) => t.count))
  const requests: Array<Promise<{ ok: number, errors: Record<string, number> }>> = []
  let from = firstIndex
  const started = now()
  for (const target of targets) {
    const share = Math.ceil(target.count / loads.length)
    loads.forEach((load, i) => {
      const count = Math.max(0, Math.min(share, target.count - i * share))
      requests.push(load.request({
        op,
        kind,
        url: target.url,
        from,
        count,
        concurrency: Math.ceil(settings.connectConcurrency / targets.length),
        secret,
        channel: BENCH_CHANNEL,
        localAddress: settings.sourceAddresses > 1 ? `127.0.0.${1 + (i % settings.sourceAddresses)}` : undefined,
        ...extra
      }, 30_000 + total * 5))
      from += count
    })
  }
  const connects = await Promise.all(requests)
  const connected = sum(connects.map((c) => c.ok))
  const errors: Record<string, number> = {}
  for (const c of connects) for (const [k, n] of Object.entries(c.errors)) errors[k] = (errors[k] ?? 0) + n
  return { connected, perSec: connected / ((now() - started) / 1000), errors }
}

/**
 * Bursts then a steady rate, published through `publisher`'s broker API (control ops),
 * then, when `httpPort` is given, through HTTP POST /realtime/publish on that port.
 * CPU is summed over `servers`.
 */
export async function measureFanout (
  servers: ChildChannel[], publisher: ChildChannel, loads: ChildChannel[], settings: Settings, connected: number, secret: string, httpPort?: number
): Promise<Measured> {
  const out: Measured = {}
  const perClient = Math.max(5, Math.round(settings.burstDeliveries / connected))
  const warmUp = Math.min(5, perClient)
  const serverBurst = (count: number) => async () => { await publisher.request({ op: 'burst', count }, 120_000) }
  await measureBurst(servers, loads, warmUp, serverBurst(warmUp)) // not counted
  out.fanout = await burstReps(servers, loads, perClient, settings.reps, serverBurst(perClient))
  out.latency = await measureLatency(loads, settings, connected, async (rate, ticks) => {
    await publisher.request({ op: 'steady', rate, durationMs: (ticks * 1000) / rate }, (ticks * 1000) / rate + 30_000)
  })
  if (httpPort === undefined) return out

  const http = new HttpPublisher(httpPort, mintToken(secret, { sub: 'bench-service', roles: ['service'], ttlSeconds: 3600 }))
  try {
    const body = () => ({ channel: BENCH_CHANNEL, type: 'bench', payload: { seq: 0, sentAt: now() } })
    const httpBurst = (count: number) => async () => { await http.burst(count, body) }
    await measureBurst(servers, loads, warmUp, httpBurst(warmUp))
    out.fanoutHttp = await burstReps(servers, loads, perClient, settings.reps, httpBurst(perClient))
    out.latencyHttp = await measureLatency(loads, settings, connected, async (rate, ticks) => {
      const sends: Array<Promise<void>> = []
      const start = now()
      for (let i = 0; i < ticks; i++) {
        await sleep(start + (i * 1000) / rate - now()) // on a fixed schedule, not drifting with each send
        sends.push(http.publish(body()))
      }
      await Promise.all(sends)
    })
    out.httpFailures = http.failures
    out.httpLastFailure = http.lastFailure
  } finally {
    http.close()
  }
  return out
}

/** The clients each load process saw close before the end. */
export async function droppedClients (loads: ChildChannel[]): Promise<number> {
  const status = await Promise.all(loads.map((l) => l.request<{ dropped: number }>({ op: 'status' }, 10_000)))
  return sum(status.map((s) => s.dropped))
}

/** Servers first (their side keeps the TIME_WAITs), then the clients; whatever does not leave is killed. */
export async function shutdown (servers: ChildChannel[], loads: ChildChannel[]): Promise<void> {
  await Promise.all(servers.map(async (srv) => {
    await srv.request({ op: 'exit' }, 15_000).catch(() => {})
    await new Promise((resolve) => { if (srv.child.exitCode !== null) resolve(null); else { srv.child.once('exit', resolve); setTimeout(resolve, 15_000).unref() } })
    srv.kill()
  }))
  await Promise.all(loads.map((l) => l.request({ op: 'close' }, 15_000).catch(() => {})))
  for (const l of loads) l.kill()
}

/**
 * Runs one server at one connection count: connect, idle memory, bursts, steady latency.
 * Each step is bounded by a timeout; whatever is left is killed on any error. `env` goes to
 * the server process (bench/features.ts: the gateway with other settings).
 */
export async function runScenario (server: ServerName, connections: number, settings: Settings, track: Track, env: Record<string, string> = {}): Promise<ScenarioResult> {
  const secret = `bench-${process.pid}-${Date.now()}`
  const srv = startServer(server, secret, settings, track, env)
  let loads: ChildChannel[] = []
  const result: ScenarioResult = { server, connections, connected: 0, connectErrors: {}, connectPerSec: 0, dropped: 0 }
  try {
    const { port } = await srv.event<{ port: number }>('ready', 30_000)
    loads = startLoads(settings, track)
    const url = server === 'gateway'
      ? `ws://127.0.0.1:${port}/ws`
      : server === 'socketio' ? `ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket` : `ws://127.0.0.1:${port}/`
    const kind = server === 'gateway' ? 'gateway' : server === 'socketio' ? 'socketio' : 'ws'
    // Before the baselines, every server's one-time costs are paid, the same way for
    // every server: a warm-up batch that stays connected (C in all) sizes the registries
    // and compiles the connection paths; then a churn (clients that connect, subscribe
    // and close again, 50 at a time) runs those paths often enough for the JIT to
    // optimise them. RSS is measured from before the churn: what the process as a whole
    // grew by, the churn's leftovers included (its freed pages would otherwise be reused
    // by the new clients and hide their cost). Heap is measured from after the churn:
    // what the idle connections hold, without the optimised code.
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

    // Idle memory, after GC, against the same server's figure after the warm-up batch.
    await sleep(settings.settleMs)
    const after = await srv.request<Mem>({ op: 'mem' }, 30_000)
    const perConnection = (a: number, b: number) => (a - b) / connect.connected
    result.memory = {
      rssPerConnection: perConnection(after.rss, beforeChurn.rss),
      heapPerConnection: perConnection(after.heapUsed, before.heapUsed),
      heapSpacesPerConnection: Object.fromEntries(Object.entries(after.spaces)
        .map(([space, used]) => [space, Math.round(perConnection(used, before.spaces[space] ?? 0))])),
      before: { rss: beforeChurn.rss, heapUsed: before.heapUsed },
      after: { rss: after.rss, heapUsed: after.heapUsed }
    }
    if (settings.profileDir !== undefined) {
      await srv.request({ op: 'snapshot', dir: settings.profileDir, name: `${server}-${connections}-idle` }, 300_000)
    }

    const httpPort = server === 'gateway' && settings.noHttp !== true ? port : undefined
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
