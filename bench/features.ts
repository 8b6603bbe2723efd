import { Redis } from 'ioredis'
import WebSocket from 'ws'
import { mintToken } from '../lib/auth/token.js'
import { now, sleep } from './lib/clock.js'
import { HttpPublisher } from './lib/http-publisher.js'
import type { ChildChannel } from './lib/ipc.js'
import { deletePrefix, requireRedis } from './lib/redis-prefix.js'
import { median, sum } from './measure.js'
import { formatTable, rate } from './report.js'
import { connectClients, runScenario, type ScenarioResult, type Settings, shutdown, startLoads, startServer } from './scenario.js'
import { presencePush } from './presence-push.js'

/**
 * The costs of single features, each against the same gateway without it, in the same run
 * (bench/README.md, "Feature costs"). `--only=<name>` runs one:
 *
 * - `idempotency` (issue 15): HTTP publish throughput on Redis, 16 requests in flight, with
 *   a fresh `Idempotency-Key` on every request vs none. Target: at most 1.3× the cost.
 * - `presence` (issue 17): the usual scenario (bench/scenario.ts) at 10k connections with
 *   PRESENCE_CHANNELS covering the bench channels vs not: idle memory and fan-out within 5 %.
 * - `presence-redis` (issue 17): 3 instances on Redis, each holding the same 20k product
 *   channels with presence: the Redis commands the instances send for presence, per second,
 *   counted with MONITOR (filtered to their own connections) while settling, idle and churning.
 * - `presence-push`: the gateway's CPU per presence frame pushed to a channel's subscribers,
 *   against its CPU per event frame at the same cadence (bench/presence-push.ts): reported.
 * - `rewind` (issue 17): 10k clients connecting at once, subscribing with `rewind: 1` vs
 *   without: connect-and-subscribe rate within 10 %.
 *
 * Variants alternate (A B B A …) so neither always runs first. Never fails on timing.
 */
export const FEATURES = ['idempotency', 'presence', 'presence-redis', 'presence-push', 'rewind'] as const
export type FeatureName = typeof FEATURES[number]

export interface FeatureCheck { what: string, value: number, limit: number, met: boolean, direction: '≤' | '≥' }
export interface FeatureResult {
  name: FeatureName
  /** The table printed for it, with its header. */
  header: string[]
  rows: string[][]
  notes: string[]
  checks: FeatureCheck[]
  data: unknown
  error?: string
}

export interface FeatureOptions {
  quick: boolean
  /** C for `presence` and `rewind` (10k unless --feature-connections). */
  connections: number
  rounds: number
}

type Track = (c: ChildChannel) => void
type Log = (line: string) => void

const REDIS_URL = 'redis://127.0.0.1:6379'
/** Key prefixes of runs in flight, for run.ts's signal handler. */
export const liveFeaturePrefixes = new Set<string>()

const newPrefix = (what: string): string => `rtg-bench-${process.pid}-${Date.now()}-${what}:`
const secretOf = (): string => `bench-${process.pid}-${Date.now()}`
/** A B B A A B …: round r runs the variants in turn, reversed on odd rounds. */
const abba = <T>(variants: T[], rounds: number): T[] =>
  Array.from({ length: rounds }, (_, r) => r % 2 === 0 ? variants : [...variants].reverse()).flat()
const pct = (x: number): string => `${x.toFixed(2)}×`
function check (what: string, value: number, direction: '≤' | '≥', limit: number): FeatureCheck {
  return { what, value, limit, direction, met: direction === '≤' ? value <= limit : value >= limit }
}
const mark = (c: FeatureCheck): string => `${c.met ? 'ok' : 'TARGET MISSED'} ${c.direction}${c.limit}×`

export async function runFeature (name: FeatureName, settings: Settings, options: FeatureOptions, track: Track, log: Log): Promise<FeatureResult> {
  const empty: FeatureResult = { name, header: [], rows: [], notes: [], checks: [], data: undefined }
  try {
    if (name === 'idempotency') return await idempotency(settings, options, track, log)
    if (name === 'presence') return await presence(settings, options, track, log)
    if (name === 'presence-redis') return await presenceRedis(settings, options, track, log)
    if (name === 'presence-push') return await presencePushCost(settings, options, track, log)
    return await rewind(settings, options, track, log)
  } catch (err) {
    return { ...empty, error: (err as Error).message }
  }
}

/** Sum of user + system CPU µs of these processes. */
async function cpuOf (servers: ChildChannel[]): Promise<number> {
  const times = await Promise.all(servers.map((s) => s.request<{ user: number, system: number }>({ op: 'cpu' }, 10_000)))
  return sum(times.map((t) => t.user + t.system))
}

// ---------------------------------------------------------------- idempotency

interface PublishRun { variant: 'without key' | 'with key', publishes: number, perSec: number, cpuUsPerPublish: number, failures: number }

async function idempotency (settings: Settings, options: FeatureOptions, track: Track, log: Log): Promise<FeatureResult> {
  await requireRedis(REDIS_URL)
  const secret = secretOf()
  const keyPrefix = newPrefix('idempotency')
  liveFeaturePrefixes.add(keyPrefix)
  const srv = startServer('gateway', secret, settings, track, { BENCH_REDIS_URL: REDIS_URL, BENCH_REDIS_KEY_PREFIX: keyPrefix }, 'gateway-idempotency')
  const runs: PublishRun[] = []
  let http: HttpPublisher | undefined
  let keysDeleted: number | undefined
  const count = options.quick ? 2000 : 10_000
  const rounds = Math.max(2, options.rounds)
  try {
    const { port } = await srv.event<{ port: number }>('ready', 30_000)
    http = new HttpPublisher(port, mintToken(secret, { sub: 'bench-service', roles: ['service'], ttlSeconds: 3600 }))
    const publisher = http
    const runId = `${process.pid}-${Date.now()}`
    // 100 channels, so the publishes are not all queued behind one channel's key in Redis.
    const body = (i: number) => ({ channel: `room:idem-${i % 100}`, type: 'bench', payload: { seq: i, sentAt: now() } })
    let batch = 0
    const once = async (variant: PublishRun['variant'], n: number): Promise<PublishRun> => {
      const b = batch++
      const headers = variant === 'with key' ? (i: number) => ({ 'idempotency-key': `bench-${runId}-${b}-${i}` }) : undefined
      const failuresBefore = publisher.failures
      const cpuBefore = await cpuOf([srv])
      const t0 = now()
      await publisher.burst(n, body, headers)
      const ms = now() - t0
      const cpu = await cpuOf([srv]) - cpuBefore
      return { variant, publishes: n, perSec: n / (ms / 1000), cpuUsPerPublish: cpu / n, failures: publisher.failures - failuresBefore }
    }
    // Warm-up: both paths compiled and Redis's scripts loaded before anything counts.
    await once('without key', 2000)
    await once('with key', 2000)
    for (const variant of abba<PublishRun['variant']>(['without key', 'with key'], rounds)) {
      const run = await once(variant, count)
      log(`idempotency: ${variant}: ${rate(run.perSec)} publishes/s, ${run.cpuUsPerPublish.toFixed(1)} µs CPU each`)
      runs.push(run)
      await sleep(300)
    }
  } finally {
    http?.close()
    await shutdown([srv], [])
    keysDeleted = await deletePrefix(REDIS_URL, keyPrefix).catch(() => undefined)
    liveFeaturePrefixes.delete(keyPrefix)
  }
  const of = (v: PublishRun['variant']) => runs.filter((r) => r.variant === v)
  const without = median(of('without key').map((r) => r.perSec))
  const withKey = median(of('with key').map((r) => r.perSec))
  const cpuWithout = median(of('without key').map((r) => r.cpuUsPerPublish))
  const cpuWith = median(of('with key').map((r) => r.cpuUsPerPublish))
  const cost = check('idempotency: cost with a key (throughput without ÷ with)', without / withKey, '≤', 1.3)
  const perRound = runs.map((r) => `${r.variant} ${rate(r.perSec)}`).join(', ')
  const failures = sum(runs.map((r) => r.failures))
  return {
    name: 'idempotency',
    header: ['feature', 'metric', 'without key', 'with key', 'cost (without ÷ with)', 'targets'],
    rows: [
      ['idempotency', 'HTTP publishes/s, 16 in flight', rate(without), rate(withKey), pct(without / withKey), mark(cost)],
      ['idempotency', 'gateway CPU per publish, µs', cpuWithout.toFixed(1), cpuWith.toFixed(1), pct(cpuWith / cpuWithout), '']
    ],
    notes: [
      `${runs.length} runs of ${count} publishes each, alternating (medians above): ${perRound}`,
      ...(failures > 0 ? [`problems: ${failures} publishes failed (last: ${http?.lastFailure ?? ''})`] : []),
      `Redis keys deleted afterwards under ${keyPrefix}: ${keysDeleted ?? 'cleanup failed'}`
    ],
    checks: [cost],
    data: { runs, keyPrefix, keysDeleted, count }
  }
}

// ---------------------------------------------------------------- presence (memory broker)

const PRESENCE_VARIANTS = [
  { label: 'off', channels: 'product:' },
  { label: 'on (room:)', channels: 'room:' },
  { label: 'on (room:,user:)', channels: 'room:,user:' }
] as const

async function presence (settings: Settings, options: FeatureOptions, track: Track, log: Log): Promise<FeatureResult> {
  const C = options.connections
  // Latency is not what this compares: short; the broker-fed bursts are.
  const here: Settings = { ...settings, noHttp: true, latencyMs: 1500 }
  const runs: Array<{ variant: string, result: ScenarioResult }> = []
  const rounds = Math.max(1, options.rounds)
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? [...PRESENCE_VARIANTS] : [...PRESENCE_VARIANTS].reverse()
    for (const variant of order) {
      const t0 = Date.now()
      const result = await runScenario('gateway', C, here, track, { BENCH_CONFIG: JSON.stringify({ PRESENCE_CHANNELS: variant.channels }) })
      log(`presence ${variant.label} C=${C}: ${result.error ?? 'done'} in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
      runs.push({ variant: variant.label, result })
    }
  }
  const med = (label: string, pick: (r: ScenarioResult) => number | undefined): number =>
    median(runs.filter((x) => x.variant === label).map((x) => pick(x.result)).filter((v): v is number => v !== undefined && Number.isFinite(v)))
  const metrics: Array<{ metric: string, pick: (r: ScenarioResult) => number | undefined, fmt: (v: number) => string, target?: { direction: '≤' | '≥', limit: number } }> = [
    { metric: 'heap per 10k idle conns, MB', pick: (r) => r.memory === undefined ? undefined : r.memory.heapPerConnection * 1e4 / 1e6, fmt: (v) => v.toFixed(1), target: { direction: '≤', limit: 1.05 } },
    { metric: 'RSS per 10k idle conns, MB', pick: (r) => r.memory === undefined ? undefined : r.memory.rssPerConnection * 1e4 / 1e6, fmt: (v) => v.toFixed(1) },
    { metric: 'fan-out, delivered msgs/s', pick: (r) => r.fanout?.messagesPerSec, fmt: rate, target: { direction: '≥', limit: 0.95 } },
    { metric: 'server CPU per delivered msg, µs', pick: (r) => r.fanout?.cpuUsPerMessage, fmt: (v) => v.toFixed(2), target: { direction: '≤', limit: 1.05 } },
    { metric: 'connect rate, conn/s', pick: (r) => r.connectPerSec, fmt: rate }
  ]
  const rows: string[][] = []
  const checks: FeatureCheck[] = []
  for (const m of metrics) {
    const off = med('off', m.pick)
    for (const variant of PRESENCE_VARIANTS.slice(1)) {
      const on = med(variant.label, m.pick)
      const ratio = on / off
      let targets = ''
      if (m.target !== undefined) {
        const c = check(`presence ${variant.label} ÷ off at C=${C}: ${m.metric}`, ratio, m.target.direction, m.target.limit)
        checks.push(c)
        targets = mark(c)
      }
      rows.push([String(C), m.metric, variant.label, m.fmt(off), m.fmt(on), pct(ratio), targets])
    }
  }
  const problems = runs.filter((x) => x.result.error !== undefined || x.result.connected < C || x.result.dropped > 0 || x.result.fanout?.complete === false)
    .map((x) => `${x.variant}: ${x.result.error ?? ''} connected ${x.result.connected}/${C}, dropped ${x.result.dropped}, fan-out complete ${String(x.result.fanout?.complete)}`)
  const perRound = metrics.slice(0, 4).map((m) =>
    `${m.metric}: ${runs.map((x) => `${x.variant} ${m.fmt(m.pick(x.result) ?? NaN)}`).join(', ')}`)
  return {
    name: 'presence',
    header: ['C', 'metric', 'presence', 'off', 'on', 'on ÷ off', 'targets'],
    rows,
    notes: [`${rounds} round(s), variants alternating; every run: ${perRound.join('; ')}`, ...problems.map((p) => `problems: ${p}`)],
    checks,
    data: { runs, error: undefined },
    error: runs.every((x) => x.result.error !== undefined) ? runs[0]?.result.error : undefined
  }
}

// ---------------------------------------------------------------- presence pushes against events

async function presencePushCost (settings: Settings, options: FeatureOptions, track: Track, log: Log): Promise<FeatureResult> {
  const C = options.quick ? Math.min(2000, options.connections) : options.connections
  const t0 = Date.now()
  const r = await presencePush(settings, C, Math.max(1, options.rounds), options.quick ? 6000 : 15_000, track)
  log(`presence-push C=${C}: ${r.error ?? 'done'} in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  return {
    name: 'presence-push',
    header: ['C', 'frame', 'gateway CPU µs per frame', 'frames/s', 'presence ÷ event'],
    rows: [
      [String(C), 'presence (counts pushed every 100 ms)', r.presenceUsPerFrame.toFixed(2), rate(median(r.runs.filter((x) => x.phase === 'presence').map((x) => x.frames / x.seconds))), pct(r.presenceUsPerFrame / r.eventUsPerFrame)],
      [String(C), 'event (10/s through the broker API)', r.eventUsPerFrame.toFixed(2), rate(median(r.runs.filter((x) => x.phase === 'events').map((x) => x.frames / x.seconds))), '']
    ],
    notes: [`medians of ${r.runs.length / 2} run(s) each, phases alternating; every run: ${r.runs.map((x) => `${x.phase} ${x.cpuUsPerFrame.toFixed(2)} µs`).join(', ')}`],
    checks: [],
    data: r,
    error: r.error
  }
}

// ---------------------------------------------------------------- presence on Redis: commands per second

interface CommandCount { total: number, presence: number, byCommand: Record<string, number>, presenceMessages: number }
interface Phase { phase: string, seconds: number, counts: CommandCount }

/**
 * MONITOR on the shared Redis, keeping only commands from the given client addresses, and
 * sorting out presence's: a command on a `presence` key, a `~p` PUBLISH, and the MULTI/EXEC
 * around presence writes (a MULTI group counts as presence when any command in it does).
 */
class CommandWatch {
  private addresses = new Set<string>()
  private counts: CommandCount = emptyCount()
  private readonly groups = new Map<string, string[][]>()
  private monitor: Redis | undefined

  /** `presence`: the prefix of presence's keys (`<REDIS_KEY_PREFIX>presence`). */
  constructor (private readonly admin: Redis, private readonly names: string[], private readonly presence: string) {}

  async start (): Promise<void> {
    await this.refresh()
    this.monitor = await this.admin.monitor()
    this.monitor.on('error', () => {})
    this.monitor.on('monitor', (_time: string, args: string[], source: string) => {
      if (this.addresses.has(source)) this.record(source, args)
    })
  }

  async refresh (): Promise<void> {
    const list = await this.admin.client('LIST') as string
    this.addresses = new Set(list.split('\n')
      .filter((l) => this.names.some((n) => l.includes(` name=${n}`)))
      .map((l) => /addr=(\S+)/.exec(l)?.[1] ?? ''))
  }

  take (): CommandCount {
    const c = this.counts
    this.counts = emptyCount()
    return c
  }

  stop (): void {
    this.monitor?.disconnect()
  }

  private record (source: string, args: string[]): void {
    const command = args[0].toLowerCase()
    const group = this.groups.get(source)
    if (command === 'multi') { this.groups.set(source, [args]); return }
    if (group !== undefined && command !== 'exec') { group.push(args); return }
    const commands = group === undefined ? [args] : [...group, args]
    this.groups.delete(source)
    const isPresence = commands.some((c) => c.slice(1).some((a) => a.startsWith(this.presence) || a.startsWith('~p')))
    for (const c of commands) {
      const name = c[0].toLowerCase()
      this.counts.total++
      this.counts.byCommand[name] = (this.counts.byCommand[name] ?? 0) + 1
      if (isPresence) this.counts.presence++
      if (name === 'publish' && (c[2] ?? '').startsWith('~p')) this.counts.presenceMessages++
    }
  }
}
const emptyCount = (): CommandCount => ({ total: 0, presence: 0, byCommand: {}, presenceMessages: 0 })

/** A gateway client for the presence case: subscribes to `channels` in one frame. */
function openClient (url: string, token: string, channels: string[]): Promise<WebSocket> {
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('presence client: not subscribed in 30 s')) }, 30_000)
    ws.on('error', (err) => { clearTimeout(timer); reject(err) })
    ws.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as { type: string, id?: string, payload?: unknown }
      if (frame.type === 'system:connected') ws.send(JSON.stringify({ type: 'subscribe', id: 's', payload: { channels } }))
      else if (frame.type === 'subscribed' && frame.id === 's') { clearTimeout(timer); ws.removeAllListeners('message'); ws.on('message', () => {}); resolve(ws) } else if (frame.type === 'error') { clearTimeout(timer); ws.terminate(); reject(new Error(`presence client: ${data.toString().slice(0, 200)}`)) }
    })
  })
}

async function presenceRedis (settings: Settings, options: FeatureOptions, track: Track, log: Log): Promise<FeatureResult> {
  await requireRedis(REDIS_URL)
  const INSTANCES = 3
  const CHANNELS = 20_000
  // 500 + the user's own channel: under the 1000 a subscribe may name and MAX_CHANNELS_PER_CONNECTION.
  const PER_CONNECTION = 500
  const INTERVAL_MS = 2000
  const connectionsPerInstance = CHANNELS / PER_CONNECTION
  const phaseMs = options.quick ? 6000 : 20_000
  const secret = secretOf()
  // Neither the prefix nor the node ids say "presence": only presence's own keys do.
  const keyPrefix = newPrefix('pres')
  liveFeaturePrefixes.add(keyPrefix)
  const nodeIds = Array.from({ length: INSTANCES }, (_, k) => `bench-pr-${process.pid}-${k}`)
  const servers = nodeIds.map((nodeId, k) => startServer('gateway', secret, settings, track, {
    BENCH_REDIS_URL: REDIS_URL,
    BENCH_REDIS_KEY_PREFIX: keyPrefix,
    BENCH_CONFIG: JSON.stringify({ NODE_ID: nodeId, PRESENCE_CHANNELS: 'product:', PRESENCE_INTERVAL_MS: INTERVAL_MS, MAX_CHANNELS_PER_CONNECTION: 1000, NEW_CHANNELS_PER_SECOND: 1e9, NEW_CHANNELS_BURST: 1e9 })
  }, `gateway-pres-${k}`))
  const admin = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 })
  admin.on('error', () => {})
  const watch = new CommandWatch(admin, nodeIds.map((id) => `rtg-${id}:`), `${keyPrefix}presence`)
  const clients: WebSocket[][] = nodeIds.map(() => [])
  const phases: Phase[] = []
  let keysDeleted: number | undefined
  let sample: { keys: number, bytes: number } | undefined
  try {
    const ports = (await Promise.all(servers.map((s) => s.event<{ port: number }>('ready', 30_000)))).map((r) => r.port)
    const urls = ports.map((p) => `ws://127.0.0.1:${p}/ws`)
    const channelsOf = (j: number) => Array.from({ length: PER_CONNECTION }, (_, i) => `product:${j * PER_CONNECTION + i}`)
    let users = 0
    const open = (k: number, j: number) => openClient(urls[k], mintToken(secret, { sub: `presence-${users++}`, ttlSeconds: 3600 }), channelsOf(j))
    await watch.start()
    const phase = async (name: string, run: () => Promise<void>): Promise<void> => {
      watch.take()
      const t0 = now()
      await run()
      const seconds = (now() - t0) / 1000
      phases.push({ phase: name, seconds, counts: watch.take() })
      const p = phases[phases.length - 1]
      log(`presence-redis ${name}: ${p.counts.presence} presence commands of ${p.counts.total} in ${seconds.toFixed(1)} s`)
    }
    await phase('subscribe 3 × 20k channels and settle', async () => {
      for (let j = 0; j < connectionsPerInstance; j++) {
        const opened = await Promise.all(nodeIds.map(async (_, k) => await open(k, j)))
        opened.forEach((ws, k) => clients[k].push(ws))
      }
      await watch.refresh()
      await sleep(3 * INTERVAL_MS)
    })
    await phase('idle: nobody joins or leaves', async () => { await sleep(phaseMs) })
    // Churn: every second, on every instance, one connection (500 channels) leaves and a new
    // user takes its place on the same channels: 500 channels' shares change per second per instance.
    await phase(`churn: 1 connection (${PER_CONNECTION} channels) replaced per second per instance`, async () => {
      const until = now() + phaseMs
      for (let tick = 0; now() < until; tick++) {
        const next = now() + 1000
        const j = tick % connectionsPerInstance
        await Promise.all(nodeIds.map(async (_, k) => {
          clients[k][j].terminate()
          clients[k][j] = await open(k, j)
        }))
        await sleep(next - now())
      }
      await sleep(INTERVAL_MS + 500) // the last changes written
    })
    // Redis memory of presence: a sample of share hashes, scaled.
    const keys = Array.from({ length: 50 }, (_, i) => `${keyPrefix}presence:product:${i * 397}`)
    const bytes = await Promise.all(keys.map(async (k) => Number(await admin.memory('USAGE', k) ?? 0)))
    sample = { keys: keys.length, bytes: sum(bytes) }
  } finally {
    watch.stop()
    for (const list of clients) for (const ws of list) ws.terminate()
    await shutdown(servers, [])
    keysDeleted = await deletePrefix(REDIS_URL, keyPrefix).catch(() => undefined)
    liveFeaturePrefixes.delete(keyPrefix)
    admin.disconnect()
  }
  const rows = phases.map((p) => {
    const top = Object.entries(p.counts.byCommand).sort((a, b) => b[1] - a[1]).slice(0, 6).map(([c, n]) => `${c} ${rate(n / p.seconds)}`).join(', ')
    return ['presence-redis', p.phase, p.seconds.toFixed(1), rate(p.counts.presence / p.seconds), rate(p.counts.total / p.seconds),
      rate(p.counts.presenceMessages / p.seconds), top]
  })
  const perHash = sample === undefined ? undefined : sample.bytes / sample.keys
  return {
    name: 'presence-redis',
    header: ['feature', 'phase (3 instances, PRESENCE_INTERVAL_MS 2000)', 'seconds', 'presence cmds/s', 'all cmds/s', '~p msgs/s', 'commands/s by name (all)'],
    rows,
    notes: [
      `${INSTANCES} instances × ${connectionsPerInstance} connections × ${PER_CONNECTION} product channels each: every instance holds the same ${CHANNELS} channels with presence.`,
      'Counted with MONITOR on the instances\' own connections (CLIENT LIST by name); "all" includes SUBSCRIBEs, position reads, the connection probe\'s PING and the cluster-stats heartbeat.',
      ...(perHash === undefined ? [] : [`Redis memory of a channel's share hash (MEMORY USAGE, ${sample?.keys ?? 0} sampled): ${perHash.toFixed(0)} B, so ${(perHash * CHANNELS / 1e6).toFixed(1)} MB for ${CHANNELS} channels at 3 instances`]),
      `Redis keys deleted afterwards under ${keyPrefix}: ${keysDeleted ?? 'cleanup failed'}`
    ],
    checks: [],
    data: { phases, sample, keyPrefix, keysDeleted }
  }
}

// ---------------------------------------------------------------- rewind

interface RewindRun { variant: string, broker: string, connected: number, perSec: number, errors: Record<string, number>, error?: string }

async function rewind (settings: Settings, options: FeatureOptions, track: Track, log: Log): Promise<FeatureResult> {
  const C = options.connections
  // "At once": 4× the usual handshakes in flight (100 per load process). With 500 each the
  // listen backlog (511) overflowed and dropped SYNs cost seconds of retransmits, on both sides alike.
  const here: Settings = { ...settings, connectConcurrency: 100 }
  const runs: RewindRun[] = []
  const rounds = Math.max(2, options.rounds)
  const redisUp = await requireRedis(REDIS_URL).then(() => true, () => false)
  for (const broker of redisUp ? ['memory', 'redis'] : ['memory']) {
    for (const variant of abba(['no rewind', 'rewind 1'], rounds)) {
      const secret = secretOf()
      const keyPrefix = newPrefix('rewind')
      // Presence off for room:bench (on by default): its first frame walks the channel's
      // subscribers, O(n²) for n joining at once (docs/operations.md, "Presence cost"),
      // which would bury what rewind costs; the `presence` case measures that.
      const env: Record<string, string> = {
        BENCH_CONFIG: JSON.stringify({ PRESENCE_CHANNELS: 'product:' }),
        ...(broker === 'redis' ? { BENCH_REDIS_URL: REDIS_URL, BENCH_REDIS_KEY_PREFIX: keyPrefix } : {})
      }
      if (broker === 'redis') liveFeaturePrefixes.add(keyPrefix)
      const srv = startServer('gateway', secret, here, track, env, `gateway-rewind-${broker}`)
      let loads: ChildChannel[] = []
      try {
        const { port } = await srv.event<{ port: number }>('ready', 30_000)
        loads = startLoads(here, track)
        const url = `ws://127.0.0.1:${port}/ws`
        const extra = variant === 'rewind 1' ? { rewind: 1 } : {}
        // The channel holds events, so `rewind: 1` has one to send.
        await srv.request({ op: 'burst', count: 3 }, 30_000)
        await sleep(200)
        // Warm-up churn with the same subscribe, so both variants' paths are compiled.
        await connectClients(loads, 'gateway', [{ url, count: 2000 }], here, secret, C, 'churn', extra)
        await sleep(500)
        const t0 = Date.now()
        const connect = await connectClients(loads, 'gateway', [{ url, count: C }], here, secret, 0, 'connect', extra)
        log(`rewind ${broker} ${variant} C=${C}: ${connect.connected} in ${((Date.now() - t0) / 1000).toFixed(1)} s, ${rate(connect.perSec)}/s`)
        runs.push({ variant, broker, connected: connect.connected, perSec: connect.perSec, errors: connect.errors })
      } catch (err) {
        // One run that could not finish is reported; the others still count.
        runs.push({ variant, broker, connected: 0, perSec: NaN, errors: {}, error: (err as Error).message })
      } finally {
        await shutdown([srv], loads)
        if (broker === 'redis') {
          await deletePrefix(REDIS_URL, keyPrefix).catch(() => 0)
          liveFeaturePrefixes.delete(keyPrefix)
        }
      }
      await sleep(1000) // the TIME_WAITs of the last run are the server's; give the ports a moment
    }
  }
  const rows: string[][] = []
  const checks: FeatureCheck[] = []
  for (const broker of [...new Set(runs.map((r) => r.broker))]) {
    const of = (v: string) => median(runs.filter((r) => r.broker === broker && r.variant === v && r.error === undefined).map((r) => r.perSec))
    const without = of('no rewind')
    const withRewind = of('rewind 1')
    const c = check(`rewind 1 ÷ no rewind, ${broker} broker, C=${C}: connect-and-subscribe rate`, withRewind / without, '≥', 0.9)
    checks.push(c)
    rows.push([String(C), broker, 'connect-and-subscribe rate, conn/s', rate(without), rate(withRewind), pct(withRewind / without), mark(c)])
  }
  const problems = runs.filter((r) => r.connected < C).map((r) => `${r.broker} ${r.variant}: ${r.connected}/${C} connected ${r.error ?? JSON.stringify(r.errors)}`)
  return {
    name: 'rewind',
    header: ['C', 'broker', 'metric', 'no rewind', 'rewind 1', 'rewind ÷ none', 'targets'],
    rows,
    notes: [
      `${here.loadProcesses} load processes × ${here.connectConcurrency} handshakes in flight each; a client counts once subscribed (and, with rewind, once its rewound event arrived).`,
      `every run: ${runs.map((r) => `${r.broker} ${r.variant} ${rate(r.perSec)}`).join(', ')}`,
      ...problems.map((p) => `problems: ${p}`)
    ],
    checks,
    data: { runs },
    error: runs.every((r) => r.error !== undefined) ? runs[0]?.error : undefined
  }
}

/** The printed table of one feature, its notes and its missed targets. */
export function featureText (r: FeatureResult): string {
  const lines = [`Feature cost: ${r.name}`]
  if (r.rows.length > 0) lines.push(formatTable(r.rows, r.header))
  lines.push(...r.notes)
  for (const c of r.checks) if (!c.met) lines.push(`TARGET MISSED: ${c.what} = ${c.value.toFixed(2)}× (target ${c.direction} ${c.limit}×)`)
  if (r.error !== undefined) lines.push(`${r.name} FAILED: ${r.error}`)
  return lines.join('\n')
}
