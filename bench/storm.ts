import { fork } from 'node:child_process'
import { get } from 'node:http'
import { fileURLToPath } from 'node:url'
import { mintToken } from '../lib/auth/token.js'
import { now, sleep } from './lib/clock.js'
import { HttpPublisher } from './lib/http-publisher.js'
import { ChildChannel } from './lib/ipc.js'
import { cpuSplit, processCpuUs } from './lib/machine-cpu.js'
import { deletePrefix, requireRedis } from './lib/redis-prefix.js'
import { sum } from './measure.js'
import { type Settings, shutdown, startServer } from './scenario.js'

/**
 * The reconnect storm (issue 18, part 4). C clients on one gateway on Redis, each holding
 * `user:<id>` and two shared channels, while a second gateway on the same Redis (never
 * restarted) takes a steady stream of HTTP publishes to the shared channels and to some
 * user channels. Then every socket goes at once, twice:
 * - `drop`: the clients drop their sockets (no close handshake) and reconnect at once;
 * - `restart`: the gateway shuts down as in a deploy (close 1001), a new process starts,
 *   and every client reconnects to it at once.
 * Each client resumes with `since` (its last offset per channel) and checks that every
 * offset of every channel arrived exactly once (bench/storm-load.ts). The resume rate is
 * set against bare `ws`'s plain connect rate, measured in the same run by the same load
 * processes at the same concurrency.
 */
export const SHARED = ['room:storm-a', 'room:storm-b']
const REDIS_URL = 'redis://127.0.0.1:6379'
/**
 * Events per second in all: one in five to the shared channels (alternately), the rest over
 * USERS_PUBLISHED user channels. Every client holds both shared channels, so 4 events/s
 * there are 4·C deliveries/s (20k/s at C = 5000): a steady load, not a fan-out benchmark.
 * (At 80/s, 40 of them shared, the fan-out alone held the shared cores and the storm took
 * 80 s at C = 2000.)
 */
export const PUBLISH_RATE = 20
const USERS_PUBLISHED = 100
/** Enough history for a storm of up to ~4 minutes at PUBLISH_RATE (the default 100 fits ~25 s on a shared channel). */
const HISTORY_SIZE = 1000

export interface StormSettings {
  /** Handshakes in flight per load process, for the gateway and for bare ws alike. */
  concurrency: number
  /** Publishing before and after each storm. */
  calmMs: number
}

export interface StormVariant {
  variant: 'drop' | 'restart'
  resumed: number
  /** From the drop (or the restart's start) until the last client was resumed. */
  seconds: number
  /** Clients resumed per second, from the first reconnect to the last resume. */
  resumePerSec: number
  /**
   * The gateway's CPU time (user + system) from the drop (restart: from the new process's
   * `ready`) to the last resume, per client resumed: the live fan-out meanwhile included.
   * Less at the mercy of the machine's load than a rate.
   */
  cpuUsPerResume?: number
  /** The same span's CPU time of the load processes (the clients), and of the whole machine, per client resumed. */
  loadsCpuUsPerResume?: number
  machineCpuUsPerResume?: number
  /** Since the first connect, over the clients resumed (a client that did not resume is in `resumed`, not here). */
  lost: number
  duplicates: number
  /** Offsets the resumed clients had to receive so far, summed over clients and channels. */
  expected: number
  lossyClients: number
  /** `recovered: false` answers in this storm. */
  unrecovered: number
  published: number
  errors: Record<string, number>
}

export interface StormResult {
  connections: number
  connected: number
  /** The first connect (token, three channels, no `since`). */
  connectPerSec: number
  wsConnected: number
  wsConnectPerSec: number
  /** Bare ws's CPU time per connect, and the gateway's per first connect (µs). */
  wsCpuUsPerConnect?: number
  connectCpuUs?: number
  /** Bare ws's connects: the load processes' CPU time and the whole machine's, per connect (µs). */
  wsLoadsCpuUsPerConnect?: number
  wsMachineCpuUsPerConnect?: number
  variants: StormVariant[]
  concurrency: number
  loadProcesses: number
  publishFailures: number
  keyPrefix: string
  redisKeysDeleted?: number
  error?: string
}

type Track = (c: ChildChannel) => void
interface EachResult { ok: number, errors: Record<string, number>, started: number, lastAt: number }
interface CheckResult { lost: number, duplicates: number, expected: number, lossyClients: number, unrecovered: number, otherErrors: number }

const script = (name: string) => fileURLToPath(new URL(name, import.meta.url))

const livePrefixes = new Set<string>()

/** For run.ts's signal handler: what runs in flight left in Redis. */
export async function deleteLiveStormPrefixes (): Promise<void> {
  await Promise.all([...livePrefixes].map(async (p) => await deletePrefix(REDIS_URL, p).catch(() => 0)))
}

function merge (results: EachResult[]) {
  const errors: Record<string, number> = {}
  for (const r of results) for (const [k, n] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + n
  const ok = sum(results.map((r) => r.ok))
  const started = Math.min(...results.map((r) => r.started))
  const lastAt = Math.max(...results.map((r) => r.lastAt))
  return { ok, errors, started, lastAt, perSec: ok / Math.max(0.001, (lastAt - started) / 1000) }
}

/** A steady stream of HTTP publishes until stopped: shared channels and user channels alternate. */
function publishSteadily (http: HttpPublisher, connections: number) {
  const state = { stopped: false }
  let published = 0
  const users = Math.min(USERS_PUBLISHED, connections)
  const done = (async () => {
    const start = now()
    const sends: Array<Promise<void>> = []
    for (let i = 0; !state.stopped; i++) {
      await sleep(start + (i * 1000) / PUBLISH_RATE - now())
      const channel = i % 5 === 0 ? SHARED[(i / 5) % SHARED.length] : `user:u${i % users}`
      sends.push(http.publish({ channel, type: 'storm', payload: { i } }))
      published++
    }
    await Promise.all(sends)
  })()
  return { stop: async () => { state.stopped = true; await done; return published } }
}

/** The channel's last offset, as GET /realtime/history reports it. */
function lastOffset (port: number, token: string, channel: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path: `/realtime/history/${encodeURIComponent(channel)}?limit=1`, headers: { authorization: `Bearer ${token}` } }, (res) => {
      let body = ''
      res.on('data', (chunk: Buffer) => { body += chunk.toString() })
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`history of ${channel}: HTTP ${res.statusCode} ${body.slice(0, 200)}`))
        resolve((JSON.parse(body) as { position: { offset: number } }).position.offset)
      })
    }).on('error', reject)
  })
}

export async function runStorm (connections: number, settings: Settings, storm: StormSettings, track: Track, log: (line: string) => void): Promise<StormResult> {
  const secret = `bench-${process.pid}-${Date.now()}`
  const keyPrefix = `rtg-bench-storm-${process.pid}-${Date.now()}:`
  const loadProcesses = Math.max(2, Math.ceil(connections / 15_000))
  const result: StormResult = {
    connections, connected: 0, connectPerSec: 0, wsConnected: 0, wsConnectPerSec: 0, variants: [], concurrency: storm.concurrency * loadProcesses, loadProcesses, publishFailures: 0, keyPrefix
  }
  const servers: ChildChannel[] = []
  const loads: ChildChannel[] = []
  let http: HttpPublisher | undefined
  livePrefixes.add(keyPrefix)
  const share = Math.ceil(connections / loadProcesses)
  const counts: number[] = []
  try {
    await requireRedis(REDIS_URL)
    for (let i = 0; i < loadProcesses; i++) {
      const load = new ChildChannel(fork(script('storm-load.js'), [], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }), `storm-load-${i}`)
      track(load)
      loads.push(load)
      counts.push(Math.max(0, Math.min(share, connections - i * share)))
    }
    const addresses = Math.min(200, Math.max(1, settings.sourceAddresses, Math.ceil((connections * 4) / 20_000)))
    const connectAll = async (kind: 'gateway' | 'ws', url: string) => merge(await Promise.all(loads.map(async (l, i) =>
      await l.request<EachResult>({ op: 'connect', kind, url, from: i * share, count: counts[i], concurrency: storm.concurrency, secret, shared: SHARED, addresses }, 60_000 + connections * 20))))

    // Bare ws's plain connect rate: the same load processes, concurrency and source addresses.
    const ws = startServer('ws-naive', secret, settings, track, {}, 'storm-ws')
    const { port: wsPort } = await ws.event<{ port: number }>('ready', 30_000)
    const wsBefore = await cpuSplit(ws, loads)
    const bare = await connectAll('ws', `ws://127.0.0.1:${wsPort}/`)
    const wsAfter = await cpuSplit(ws, loads)
    const perConnect = Math.max(1, bare.ok)
    result.wsCpuUsPerConnect = (wsAfter.server - wsBefore.server) / perConnect
    result.wsLoadsCpuUsPerConnect = (wsAfter.others - wsBefore.others) / perConnect
    result.wsMachineCpuUsPerConnect = (wsAfter.machine - wsBefore.machine) / perConnect
    result.wsConnected = bare.ok
    result.wsConnectPerSec = bare.perSec
    await Promise.all(loads.map(async (l) => await l.request({ op: 'closePlain' }, 30_000)))
    await shutdown([ws], [])
    log(`storm C=${connections}: bare ws connected ${bare.ok} at ${bare.perSec.toFixed(0)}/s`)

    const env = { BENCH_REDIS_URL: REDIS_URL, BENCH_REDIS_KEY_PREFIX: keyPrefix, BENCH_HISTORY_SIZE: String(HISTORY_SIZE) }
    const publisher = startServer('gateway', secret, settings, track, env, 'storm-publisher')
    servers.push(publisher)
    let gateway = startServer('gateway', secret, settings, track, env, 'storm-gateway')
    servers.push(gateway)
    const [{ port: publisherPort }, { port }] = await Promise.all([publisher.event<{ port: number }>('ready', 30_000), gateway.event<{ port: number }>('ready', 30_000)])
    let url = `ws://127.0.0.1:${port}/ws`
    const connectCpu = await processCpuUs(gateway)
    const first = await connectAll('gateway', url)
    result.connectCpuUs = (await processCpuUs(gateway) - connectCpu) / Math.max(1, first.ok)
    result.connected = first.ok
    result.connectPerSec = first.perSec
    if (first.ok < connections) throw new Error(`${first.ok} of ${connections} connected: ${JSON.stringify(first.errors)}`)
    log(`storm C=${connections}: gateway connected ${first.ok} at ${first.perSec.toFixed(0)}/s`)

    const serviceToken = mintToken(secret, { sub: 'bench-service', roles: ['service'], ttlSeconds: 3600 })
    http = new HttpPublisher(publisherPort, serviceToken, 4)
    const users = Math.min(USERS_PUBLISHED, connections)
    const channels = [...SHARED, ...Array.from({ length: users }, (_, u) => `user:u${u}`)]
    let before: CheckResult = { lost: 0, duplicates: 0, expected: 0, lossyClients: 0, unrecovered: 0, otherErrors: 0 }
    for (const variant of ['drop', 'restart'] as const) {
      const publishing = publishSteadily(http, connections)
      await sleep(storm.calmMs)
      const t0 = now()
      let cpuBefore = { server: 0, others: 0, machine: 0 }
      if (variant === 'drop') {
        cpuBefore = await cpuSplit(gateway, loads)
        await Promise.all(loads.map(async (l) => await l.request({ op: 'drop' }, 30_000)))
      } else {
        // A deploy: the old process closes every connection (1001) and exits, a new one starts.
        await gateway.request({ op: 'close' }, 60_000)
        await shutdown([gateway], [])
        gateway = startServer('gateway', secret, settings, track, env, 'storm-gateway-restarted')
        servers.push(gateway)
        url = `ws://127.0.0.1:${(await gateway.event<{ port: number }>('ready', 30_000)).port}/ws`
        cpuBefore = await cpuSplit(gateway, loads)
      }
      const resumed = merge(await Promise.all(loads.map(async (l) => await l.request<EachResult>({ op: 'resume', url, concurrency: storm.concurrency }, 60_000 + connections * 20))))
      const cpuAfter = await cpuSplit(gateway, loads)
      const perResume = Math.max(1, resumed.ok)
      await sleep(storm.calmMs)
      const published = await publishing.stop()
      await sleep(500) // the last publishes reach the clients
      const finals = Object.fromEntries(await Promise.all(channels.map(async (ch) => [ch, await lastOffset(publisherPort, serviceToken, ch)] as const)))
      const checks = await Promise.all(loads.map(async (l) => await l.request<CheckResult>({ op: 'check', finals }, 60_000)))
      const total = {
        lost: sum(checks.map((c) => c.lost)),
        duplicates: sum(checks.map((c) => c.duplicates)),
        expected: sum(checks.map((c) => c.expected)),
        lossyClients: sum(checks.map((c) => c.lossyClients)),
        unrecovered: sum(checks.map((c) => c.unrecovered)),
        otherErrors: sum(checks.map((c) => c.otherErrors))
      }
      result.variants.push({
        variant,
        resumed: resumed.ok,
        seconds: (resumed.lastAt - t0) / 1000,
        resumePerSec: resumed.perSec,
        cpuUsPerResume: (cpuAfter.server - cpuBefore.server) / perResume,
        loadsCpuUsPerResume: (cpuAfter.others - cpuBefore.others) / perResume,
        machineCpuUsPerResume: (cpuAfter.machine - cpuBefore.machine) / perResume,
        lost: total.lost,
        duplicates: total.duplicates,
        expected: total.expected,
        lossyClients: total.lossyClients,
        unrecovered: total.unrecovered - before.unrecovered,
        published,
        errors: resumed.errors
      })
      before = total
      log(`storm C=${connections} ${variant}: ${resumed.ok} resumed in ${((resumed.lastAt - t0) / 1000).toFixed(2)} s (${resumed.perSec.toFixed(0)}/s); ` +
        `lost ${total.lost}, duplicates ${total.duplicates}, unrecovered ${total.unrecovered}`)
    }
    result.publishFailures = http.failures
  } catch (err) {
    result.error = (err as Error).message
  } finally {
    http?.close()
    await shutdown(servers, loads)
    result.redisKeysDeleted = await deletePrefix(REDIS_URL, keyPrefix).catch((err: unknown) => {
      result.error ??= `redis cleanup under ${keyPrefix} failed: ${(err as Error).message}`
      return undefined
    })
    livePrefixes.delete(keyPrefix)
  }
  return result
}
