import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { mintToken } from '../lib/auth/token.js'
import { now, sleep } from './lib/clock.js'
import { HttpPublisher } from './lib/http-publisher.js'
import { ChildChannel } from './lib/ipc.js'
import { burstReps } from './measure.js'
import { connectClients, type Settings, shutdown } from './scenario.js'
import { BENCH_CHANNEL } from './servers/control.js'

/**
 * One SSE server alone, for profiling (bench/README.md, SSE): idle heap and RSS per stream
 * between C1 and C2 streams (with --snapshots, a heap snapshot at each for bench/heap-diff.ts),
 * then broker-fed (and for the gateway HTTP-fed) bursts at C2 with CPU per delivered event.
 *
 *   npm run bench:sse-probe -- gateway-sse 1000 5000 [--snapshots] [--cpu-prof] [--per-client=60] [--reps=3] [--no-http | --http-only]
 */
const args = process.argv.slice(2)
const [server = 'gateway-sse', c1Text = '1000', c2Text = '5000'] = args.filter((a) => !a.startsWith('--'))
const option = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1]
const flag = (name: string) => args.includes(`--${name}`)
const c1 = Number(c1Text)
const c2 = Number(c2Text)
const dir = fileURLToPath(new URL('../../../bench/results/profiles/sse-probe', import.meta.url))
const script = (name: string) => fileURLToPath(new URL(name, import.meta.url))
const settings = { connectConcurrency: 50, sourceAddresses: 1 } as unknown as Settings
const secret = `probe-${process.pid}`
const file = server === 'gateway-sse' ? 'servers/gateway.js' : server === 'better-sse' ? 'servers/better-sse.js' : 'servers/bare-sse.js'
const srv = new ChildChannel(fork(script(file), [server === 'sse-corked' ? 'corked' : 'naive'], {
  execArgv: ['--expose-gc', ...(flag('cpu-prof') ? ['--cpu-prof', `--cpu-prof-dir=${dir}/${server}`] : [])],
  env: { ...process.env, BENCH_JWT_SECRET: secret },
  stdio: ['ignore', 'inherit', 'inherit', 'ipc']
}), server)
const loads = [0, 1].map((i) => new ChildChannel(fork(script('sse-load.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }), `sse-load-${i}`))
const kind = (server === 'gateway-sse' ? 'gateway' : 'sse') as 'gateway'
interface Mem { rss: number, heapUsed: number }
const kib = (bytes: number) => `${(bytes / 1024).toFixed(2)} KiB`
try {
  const { port } = await srv.event<{ port: number }>('ready', 30_000)
  const url = `http://127.0.0.1:${port}/sse`
  await connectClients(loads, kind, [{ url, count: c1 }], settings, secret)
  await sleep(1000)
  const a = await srv.request<Mem>({ op: 'mem' }, 30_000)
  if (flag('snapshots')) await srv.request({ op: 'snapshot', dir, name: `${server}-${c1}` }, 300_000)
  const more = await connectClients(loads, kind, [{ url, count: c2 - c1 }], settings, secret, c1)
  await sleep(1000)
  const b = await srv.request<Mem>({ op: 'mem' }, 30_000)
  if (flag('snapshots')) await srv.request({ op: 'snapshot', dir, name: `${server}-${c2}` }, 300_000)
  console.log(`${server}: ${more.connected} more streams: heap ${kib((b.heapUsed - a.heapUsed) / more.connected)}, RSS ${kib((b.rss - a.rss) / more.connected)} per stream`)
  const perClient = Number(option('per-client') ?? 60)
  const reps = Number(option('reps') ?? 3)
  const burst = async () => { await srv.request({ op: 'burst', count: perClient }, 120_000) }
  await burstReps([srv], loads, 5, 1, burst)
  const fan = flag('http-only') ? undefined : await burstReps([srv], loads, perClient, reps, burst)
  if (fan !== undefined) console.log(`${server} broker-fed: ${Math.round(fan.messagesPerSec)} msgs/s, ${fan.cpuUsPerMessage.toFixed(2)} µs CPU per delivery, reps ${fan.reps.map(Math.round).join(' ')}, complete ${fan.complete}`)
  if (server === 'gateway-sse' && !flag('no-http')) {
    const http = new HttpPublisher(port, mintToken(secret, { sub: 'probe', roles: ['service'], ttlSeconds: 3600 }))
    const body = () => ({ channel: BENCH_CHANNEL, type: 'bench', payload: { seq: 0, sentAt: now() } })
    const viaHttp = await burstReps([srv], loads, perClient, reps, async () => { await http.burst(perClient, body) })
    http.close()
    console.log(`${server} HTTP-fed: ${Math.round(viaHttp.messagesPerSec)} msgs/s, ${viaHttp.cpuUsPerMessage.toFixed(2)} µs CPU per delivery, reps ${viaHttp.reps.map(Math.round).join(' ')}`)
  }
} finally {
  await shutdown([srv], loads)
}
