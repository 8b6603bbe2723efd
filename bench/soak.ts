import { fork } from 'node:child_process'
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { mintToken } from '../lib/auth/token.js'
import { sleep } from './lib/clock.js'
import { ChildChannel } from './lib/ipc.js'
import { deletePrefix, requireRedis } from './lib/redis-prefix.js'

/**
 * The soak run (issue 13): one gateway (bench/servers/gateway.ts, memory broker, or Redis
 * with --redis) under N connections that keep subscribing to fresh `room:` names and
 * leaving them, reconnect now and then (resuming their channel with `since`), while a
 * service publishes over HTTP at a steady rate. Every interval it prints the server's heap,
 * RSS and event-loop delay p99 (from /metrics), its heap after a full GC, and delivered /
 * expected events; at the end, whether the heap after GC levelled off. Never part of
 * `npm test`; it stops by itself and exits 0 whatever the verdict (1 only if it could not run).
 *
 *   npm run bench:soak -- --minutes=10 --connections=2000 [--redis[=redis://host:port]]
 */
const USAGE = `usage: npm run bench:soak -- [--minutes=10] [--connections=2000] [--rate=100] [--homes=20]
         [--churn-names=10] [--churn-seconds=10] [--reconnect-seconds=120] [--interval=60] [--redis[=redis://host:port]]
  One gateway under N connections that churn channels and reconnect, for --minutes; prints memory every
  --interval seconds and whether the heap levelled off (bench/README.md, "Soak"). --redis alone is redis://127.0.0.1:6379.`
const OPTIONS = new Set(['minutes', 'connections', 'rate', 'homes', 'churn-names', 'churn-seconds', 'reconnect-seconds', 'interval', 'redis'])
const args = new Map(process.argv.slice(2).map((a) => {
  const at = a.indexOf('=')
  return at === -1 ? [a.replace(/^--/, ''), 'true'] as const : [a.slice(0, at).replace(/^--/, ''), a.slice(at + 1)] as const
}))
// A run takes minutes and a port: --help, or an option it does not know (a typo), says how and starts nothing.
if (args.has('help') || args.has('-h')) {
  console.log(USAGE)
  process.exit(0)
}
const unknown = [...args.keys()].filter((key) => !OPTIONS.has(key))
if (unknown.length > 0) {
  console.error(`soak: unknown option ${unknown.map((key) => `--${key}`).join(', ')}\n${USAGE}`)
  process.exit(1)
}
const num = (name: string, fallback: number): number => {
  const value = Number(args.get(name) ?? fallback)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`)
  return value
}
const settings = {
  minutes: num('minutes', 10),
  connections: num('connections', 2000),
  /** Events per second published over HTTP, each to one of the home channels in turn. */
  rate: num('rate', 100),
  /** Channels the connections share (connection i listens on room:soak-home-<i mod homes>). */
  homes: num('homes', 20),
  /** Each connection subscribes to this many fresh room names every churn period, and leaves them a second later. */
  churnNames: num('churn-names', 10),
  churnSeconds: num('churn-seconds', 10),
  /** Each connection reconnects once per this many seconds on average, resuming with `since`. */
  reconnectSeconds: num('reconnect-seconds', 120),
  /** Seconds between samples (60: one line a minute). */
  interval: num('interval', 60),
  redis: args.has('redis')
}
const REDIS_URL = args.get('redis') === undefined || args.get('redis') === 'true' ? 'redis://127.0.0.1:6379' : args.get('redis') as string
const runId = `${process.pid}-${Date.now()}`
const secret = `soak-${runId}`
const keyPrefix = `rtg-soak-${runId}:`
const tokenTtl = Math.ceil(settings.minutes * 60) + 600

const counters = { reconnects: 0, resumeFailures: 0, slowReconnects: 0, longestReconnectMs: 0, unexpectedCloses: {} as Record<string, number>, errors: {} as Record<string, number>, churned: 0, published: 0, publishFailures: {} as Record<string, number> }
const bump = (table: Record<string, number>, key: string) => { table[key] = (table[key] ?? 0) + 1 }
/** Per home channel, the offset of the last event published there (from the 202 receipts). */
const publishedOffset = new Map<string, number>()

/** One client: its home channel's offsets, checked for gaps and duplicates across reconnects. */
class SoakClient {
  socket: WebSocket | undefined
  readonly home: string
  readonly token: string
  base: number | undefined
  last = 0
  epoch: string | undefined
  received = 0
  duplicates = 0
  lost = 0
  private churnSeq = 0
  stopped = false

  constructor (readonly index: number, private readonly url: string) {
    this.home = `room:soak-home-${index % settings.homes}`
    this.token = mintToken(secret, { sub: `soak-${index}`, roles: [], ttlSeconds: tokenTtl })
  }

  connect (): Promise<void> {
    return new Promise((resolve) => {
      const socket = new WebSocket(`${this.url}?token=${this.token}`)
      this.socket = socket
      socket.on('message', (data) => {
        const frame = JSON.parse(data.toString())
        if (frame.type === 'system:connected') {
          const since = this.epoch === undefined ? undefined : { [this.home]: { offset: this.last, epoch: this.epoch } }
          socket.send(JSON.stringify({ type: 'subscribe', id: 'home', payload: { channels: [this.home], since } }))
        } else if (frame.type === 'subscribed' && frame.id === 'home') {
          this.onHome(frame.payload)
          resolve()
        } else if (frame.channel === this.home && typeof frame.offset === 'number') {
          this.onEvent(frame.offset)
        } else if (frame.type === 'error') {
          bump(counters.errors, frame.payload.code)
        }
      })
      socket.on('error', () => { /* the close that follows reports it */ })
      socket.on('close', (code) => {
        resolve()
        // Only the current socket reconnects; one this client closed itself has been replaced.
        if (socket !== this.socket || this.stopped) return
        bump(counters.unexpectedCloses, String(code))
        setTimeout(() => { if (!this.stopped) void this.connect() }, 1000)
      })
    })
  }

  private onHome (payload: { positions: Record<string, { offset: number, epoch: string }>, recovered: Record<string, boolean> }): void {
    const position = payload.positions[this.home]
    if (this.base === undefined) {
      this.base = this.last = position.offset
    } else if (payload.recovered[this.home] !== true) {
      counters.resumeFailures++
      this.lost += Math.max(0, position.offset - this.last)
      this.last = Math.max(this.last, position.offset)
    }
    this.epoch = position.epoch
  }

  private onEvent (offset: number): void {
    if (offset <= this.last) { this.duplicates++; return }
    this.lost += offset - this.last - 1
    this.last = offset
    this.received++
  }

  /** Fresh room names, joined and left a second later: what must not leave state behind. */
  churn (): void {
    const socket = this.socket
    if (socket?.readyState !== WebSocket.OPEN) return
    const rooms = Array.from({ length: settings.churnNames }, () => `room:soak-${runId}-${this.index}-${++this.churnSeq}`)
    socket.send(JSON.stringify({ type: 'subscribe', payload: { channels: rooms } }))
    counters.churned += rooms.length
    setTimeout(() => {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: 'unsubscribe', payload: { channels: rooms } }))
    }, 1000)
  }

  async reconnect (): Promise<void> {
    const old = this.socket
    if (old?.readyState !== WebSocket.OPEN) return
    const started = Date.now()
    this.socket = undefined
    const closed = new Promise((resolve) => old.once('close', resolve))
    old.close(1000)
    await closed
    counters.reconnects++
    if (!this.stopped) await this.connect()
    // Closed, connected again and resumed: longer than the history holds means events lost.
    const tookMs = Date.now() - started
    counters.longestReconnectMs = Math.max(counters.longestReconnectMs, tookMs)
    if (tookMs > 10_000) counters.slowReconnects++
  }

  stop (): void {
    this.stopped = true
    this.socket?.terminate()
  }
}

async function publish (port: number, token: string, channel: string, seq: number): Promise<void> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/realtime/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ channel, type: 'soak', payload: { seq, sentAt: Date.now() } }),
      signal: AbortSignal.timeout(10_000)
    })
    const body = await res.json() as { positions?: Record<string, { offset: number }> }
    const offset = body.positions?.[channel]?.offset
    if (res.status !== 202 || offset === undefined) { bump(counters.publishFailures, `HTTP ${res.status}`); return }
    publishedOffset.set(channel, Math.max(publishedOffset.get(channel) ?? 0, offset))
    counters.published++
  } catch (err) {
    bump(counters.publishFailures, (err as Error).name)
  }
}

/** A gauge of the Prometheus text at GET /metrics, or NaN. */
function gauge (text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
  return line === undefined ? NaN : Number(line.slice(line.lastIndexOf(' ') + 1))
}

interface Sample { minute: number, connections: number, heapUsed: number, heapAfterGc: number, rss: number, eldP99Ms: number, eldMaxMs: number, delivered: number, expected: number, lost: number, duplicates: number, channels: number, load: number }

function tally (clients: SoakClient[]): Pick<Sample, 'delivered' | 'expected' | 'lost' | 'duplicates'> {
  let delivered = 0; let expected = 0; let lost = 0; let duplicates = 0
  for (const c of clients) {
    delivered += c.received
    lost += c.lost
    duplicates += c.duplicates
    expected += Math.max(0, (publishedOffset.get(c.home) ?? 0) - (c.base ?? 0))
  }
  return { delivered, expected, lost, duplicates }
}

const MB = 1024 * 1024
const fmt = (s: Sample): string => [
  (s.minute).toFixed(1).padStart(6), String(s.connections).padStart(6), (s.heapUsed / MB).toFixed(1).padStart(8),
  (s.heapAfterGc / MB).toFixed(1).padStart(8), (s.rss / MB).toFixed(1).padStart(7), s.eldP99Ms.toFixed(0).padStart(7), s.eldMaxMs.toFixed(0).padStart(7),
  String(s.channels).padStart(6), `${s.delivered}/${s.expected}`.padStart(19),
  (s.expected === 0 ? 100 : 100 * s.delivered / s.expected).toFixed(2).padStart(7), String(s.lost).padStart(6), s.load.toFixed(2).padStart(5)
].join(' ')
const HEADER = [['min', 6], ['conns', 6], ['heapMB', 8], ['gcHeapMB', 8], ['rssMB', 7], ['eldP99', 7], ['eldMax', 7], ['chans', 6],
  ['delivered/expected', 19], ['%', 7], ['lost', 6], ['load', 5]].map(([name, width]) => String(name).padStart(Number(width))).join(' ')

/** Least-squares slope of y over x. */
function slope (points: Array<[number, number]>): number {
  const n = points.length
  const mx = points.reduce((s, p) => s + p[0], 0) / n
  const my = points.reduce((s, p) => s + p[1], 0) / n
  const num = points.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0)
  const den = points.reduce((s, p) => s + (p[0] - mx) ** 2, 0)
  return den === 0 ? 0 : num / den
}

async function main (): Promise<void> {
  if (settings.redis) await requireRedis(REDIS_URL)
  const script = fileURLToPath(new URL('servers/gateway.js', import.meta.url))
  const child = new ChildChannel(fork(script, [], {
    execArgv: ['--expose-gc'],
    env: {
      ...process.env,
      BENCH_JWT_SECRET: secret,
      BENCH_LOG_LEVEL: 'error',
      ...(settings.redis ? { BENCH_REDIS_URL: REDIS_URL, BENCH_REDIS_KEY_PREFIX: keyPrefix } : {})
    },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  }), 'gateway')
  const stopChild = () => child.kill()
  process.once('SIGINT', () => { stopChild(); process.exit(130) })
  const timers: NodeJS.Timeout[] = []
  const clients: SoakClient[] = []
  try {
    const { port } = await child.event<{ port: number }>('ready', 30_000)
    const service = mintToken(secret, { sub: 'soak-service', roles: ['service'], ttlSeconds: tokenTtl })
    const admin = mintToken(secret, { sub: 'soak-admin', roles: ['admin'], ttlSeconds: tokenTtl })
    console.log(`soak: ${JSON.stringify(settings)}; broker ${settings.redis ? `redis (${keyPrefix})` : 'memory'}; node ${process.version}; gateway pid ${child.child.pid}`)

    for (let i = 0; i < settings.connections; i++) clients.push(new SoakClient(i, `ws://127.0.0.1:${port}/ws`))
    for (let i = 0; i < clients.length; i += 50) await Promise.all(clients.slice(i, i + 50).map((c) => c.connect()))
    console.log(`soak: ${clients.length} connections open`)

    // Publishing: rate/10 events every 100 ms, round-robin over the home channels.
    let seq = 0
    timers.push(setInterval(() => {
      for (let k = 0; k < settings.rate / 10; k++) {
        const n = seq++
        void publish(port, service, `room:soak-home-${n % settings.homes}`, n)
      }
    }, 100))
    // Churn and reconnects: each second, the share of clients whose turn it is (spread, not in step).
    const churnPerSecond = clients.length / settings.churnSeconds
    const reconnectPerSecond = clients.length / settings.reconnectSeconds
    let churnNext = 0; let churnDebt = 0; let reconnectDebt = 0
    timers.push(setInterval(() => {
      for (churnDebt += churnPerSecond; churnDebt >= 1; churnDebt--) clients[churnNext++ % clients.length].churn()
      for (reconnectDebt += reconnectPerSecond; reconnectDebt >= 1; reconnectDebt--) {
        void clients[Math.floor(Math.random() * clients.length)].reconnect()
      }
    }, 1000))

    const samples: Sample[] = []
    const started = Date.now()
    const end = started + settings.minutes * 60_000
    console.log(HEADER)
    while (Date.now() < end) {
      await sleep(Math.min(settings.interval * 1000, end - Date.now()))
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
      const stats = await (await fetch(`http://127.0.0.1:${port}/realtime/stats`, { headers: { authorization: `Bearer ${admin}` } })).json() as { totalConnections: number, channels: number }
      const mem = await child.request<{ heapUsed: number }>({ op: 'mem' }, 30_000)
      const sample: Sample = {
        minute: (Date.now() - started) / 60_000,
        connections: stats.totalConnections,
        channels: stats.channels,
        heapUsed: gauge(metrics, 'nodejs_heap_size_used_bytes'),
        heapAfterGc: mem.heapUsed,
        rss: gauge(metrics, 'process_resident_memory_bytes'),
        eldP99Ms: gauge(metrics, 'nodejs_eventloop_lag_p99_seconds') * 1000,
        eldMaxMs: gauge(metrics, 'nodejs_eventloop_lag_max_seconds') * 1000,
        load: loadavg()[0],
        ...tally(clients)
      }
      samples.push(sample)
      console.log(fmt(sample))
    }
    for (const timer of timers) clearInterval(timer)
    // In-flight publishes and deliveries settle; then the final count must be exact.
    await sleep(3000)
    const final = tally(clients)
    console.log(`soak: published ${counters.published} events (failed: ${JSON.stringify(counters.publishFailures)}), delivered ${final.delivered}/${final.expected} ` +
      `(${(100 * final.delivered / Math.max(1, final.expected)).toFixed(3)} %), lost ${final.lost}, duplicates ${final.duplicates}; ` +
      `${counters.churned} fresh room names joined and left, ${counters.reconnects} reconnects (${counters.resumeFailures} not resumed, ` +
      `${counters.slowReconnects} took over 10 s, the longest ${(counters.longestReconnectMs / 1000).toFixed(1)} s), ` +
      `unexpected closes ${JSON.stringify(counters.unexpectedCloses)}, error frames ${JSON.stringify(counters.errors)}; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`)
    verdict(samples)
  } finally {
    for (const timer of timers) clearInterval(timer)
    for (const c of clients) c.stop()
    await child.request({ op: 'close' }, 20_000).catch(() => {})
    stopChild()
    if (settings.redis) console.log(`soak: deleted ${await deletePrefix(REDIS_URL, keyPrefix)} Redis keys under ${keyPrefix}`)
  }
}

/**
 * Memory levelled off when the heap after GC no longer grows over the second half of the
 * run: its slope there under 1 MB a minute (or 1 % of the heap a minute, whichever is more).
 * The first half holds the ramp (connections, history filling up to HISTORY_SIZE per channel).
 */
function verdict (samples: Sample[]): void {
  if (samples.length < 4) {
    console.log('soak: verdict: too few samples (need 4; run longer or lower --interval)')
    return
  }
  const half = samples.slice(Math.floor(samples.length / 2))
  const lastSlope = slope(half.map((s) => [s.minute, s.heapAfterGc / MB]))
  const firstSlope = slope(samples.slice(0, Math.ceil(samples.length / 2)).map((s) => [s.minute, s.heapAfterGc / MB]))
  const limit = Math.max(1, 0.01 * half[half.length - 1].heapAfterGc / MB)
  const ok = lastSlope <= limit
  console.log(`soak: heap after GC: ${firstSlope.toFixed(2)} MB/min over the first half, ${lastSlope.toFixed(2)} MB/min over the second (limit ${limit.toFixed(2)})`)
  console.log(`soak: verdict: ${ok ? 'memory LEVELLED OFF' : 'memory STILL GROWING'}`)
}

main().then(() => process.exit(0), (err: unknown) => {
  console.error(`soak: could not run: ${(err as Error).stack ?? String(err)}`)
  process.exit(1)
})
