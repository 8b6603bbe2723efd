import { fork } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import WebSocket from 'ws'
import { mintToken } from '../lib/auth/token.js'
import { now, sleep } from './lib/clock.js'
import { ChildChannel } from './lib/ipc.js'
import { deletePrefix, redisCpuSeconds } from './lib/redis-prefix.js'

/**
 * What signed-in users rewinding large histories over and over do to everyone else on one
 * instance, with every budget at its default: USERS users with CONNECTIONS WebSocket
 * connections each subscribe with `rewind` to the whole history of one of CHANNELS
 * channels, each holding HISTORY_SIZE events of EVENT_BYTES, then leave it and take the
 * next one as soon as they are answered (a refusal: again after 100 ms). Meanwhile a
 * service publishes 50 events a second over HTTP to a channel one victim connection holds.
 * Printed: the service's publish latency and failures, the victim's delivery latency, what
 * the attackers were sent, the gateway's peak RSS and CPU, Redis's CPU (all of its clients').
 * BENCH_GATEWAY_PROFILE=<dir> writes the gateway's CPU profile there; BENCH_GATEWAY_FLAGS
 * adds Node flags; BENCH_CONFIG (JSON) sets the gateway's settings.
 *
 *   npm run bench:rewind-flood -- [redis|memory] [--seconds=30] [--users=5] [--connections=3] [--channels=16]
 */
const args = process.argv.slice(2)
const option = (name: string, fallback: number): number => Number(args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback)
const broker = (args.find((a) => !a.startsWith('--')) ?? 'redis') as 'memory' | 'redis'
const seconds = option('seconds', 30)
const users = option('users', 5)
const connections = option('connections', 3)
const channels = option('channels', 16)
const EVENT_BYTES = 60_000
const HISTORY_SIZE = 100
const PUBLISH_EVERY_MS = 20
const secret = `rewind-${process.pid}`
const prefix = `rtg-rewind-${process.pid}:`
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

const child = fork(fileURLToPath(new URL('servers/gateway.js', import.meta.url)), [], {
  env: {
    ...process.env,
    ...(broker === 'redis' ? { BENCH_REDIS_URL: redisUrl, BENCH_REDIS_KEY_PREFIX: prefix } : {}),
    BENCH_JWT_SECRET: secret,
    BENCH_HISTORY_SIZE: String(HISTORY_SIZE)
  },
  execArgv: [...(process.env.BENCH_GATEWAY_FLAGS ?? '').split(' ').filter(Boolean), ...process.env.BENCH_GATEWAY_PROFILE === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_GATEWAY_PROFILE}`]],
  stdio: ['ignore', 'inherit', 'inherit', 'ipc']
})
const server = new ChildChannel(child, 'gateway')

/** Milliseconds at the given quantile of `values` (sorted here). */
function quantile (values: number[], q: number): number {
  if (values.length === 0) return NaN
  values.sort((a, b) => a - b)
  return values[Math.min(values.length - 1, Math.floor(q * values.length))]
}

/** The process's CPU time so far, in seconds (utime + stime of /proc/<pid>/stat, in clock ticks of 10 ms). */
function cpuSeconds (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

const redisCpu = async (): Promise<number> => broker === 'redis' ? [...(await redisCpuSeconds([redisUrl])).values()][0] : NaN

/** Bytes Redis has sent its clients so far (INFO stats: total_net_output_bytes). */
async function redisSent (): Promise<number> {
  if (broker !== 'redis') return NaN
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 0 })
  try {
    await redis.connect()
    return Number(/total_net_output_bytes:(\d+)/.exec(await redis.info('stats'))?.[1])
  } finally {
    redis.disconnect()
  }
}

function rssMb (pid: number): number {
  const match = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return match === null ? NaN : Number(match[1]) / 1024
}

async function open (url: string): Promise<WebSocket> {
  const socket = new WebSocket(url, { maxPayload: 256 * 1024 * 1024 })
  await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject) })
  return socket
}

try {
  const { port } = await server.event<{ port: number }>('ready', 30_000)
  const base = `http://127.0.0.1:${port}`
  const service = mintToken(secret, { sub: 'svc', roles: ['service'], ttlSeconds: 3600 })
  const publish = async (channel: string, type: string, payload: unknown): Promise<number> => {
    const res = await fetch(`${base}/realtime/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${service}`, 'content-type': 'application/json' },
      body: JSON.stringify({ channel, type, payload })
    })
    await res.arrayBuffer()
    return res.status
  }
  // The histories to rewind: CHANNELS × HISTORY_SIZE events of EVENT_BYTES.
  const filler = 'x'.repeat(EVENT_BYTES)
  for (let c = 0; c < channels; c++) {
    for (let i = 0; i < HISTORY_SIZE; i += 10) {
      const statuses = await Promise.all(Array.from({ length: 10 }, async () => await publish(`product:flood-${c}`, 'flood', { filler })))
      if (statuses.some((s) => s !== 202)) throw new Error(`seeding answered ${statuses.join(',')}`)
    }
  }
  console.log(`${broker}: ${channels} channels of ${HISTORY_SIZE} events of ${EVENT_BYTES} B seeded (${(channels * HISTORY_SIZE * EVENT_BYTES / 1e6).toFixed(0)} MB)`)

  const victim = await open(`ws://127.0.0.1:${port}/ws?token=${mintToken(secret, { sub: 'victim', ttlSeconds: 3600 })}`)
  const delivered: number[] = []
  victim.on('message', (data) => {
    const frame = JSON.parse(String(data))
    if (frame.type === 'tick') delivered.push(now() - frame.payload.sentAt)
  })
  victim.send(JSON.stringify({ type: 'subscribe', payload: { channels: ['product:victim'] } }))
  await sleep(500)

  const cpuBefore = { gateway: cpuSeconds(child.pid as number), redis: await redisCpu(), sent: await redisSent() }
  let running = true
  let replayBytes = 0
  let answered = 0
  let refused = 0
  const attackers: WebSocket[] = []
  for (let u = 0; u < users; u++) {
    const token = mintToken(secret, { sub: `attacker-${u}`, ttlSeconds: 3600 })
    for (let c = 0; c < connections; c++) {
      const socket = await open(`ws://127.0.0.1:${port}/ws?token=${token}`)
      attackers.push(socket)
      let next = (u * connections + c) % channels
      let current = ''
      const take = (): void => {
        if (!running) return
        if (current !== '') socket.send(JSON.stringify({ type: 'unsubscribe', payload: { channels: [current] } }))
        current = `product:flood-${next++ % channels}`
        socket.send(JSON.stringify({ type: 'subscribe', payload: { channels: [current], rewind: HISTORY_SIZE } }))
      }
      socket.on('message', (data) => {
        const text = String(data)
        if (text.startsWith('{"type":"flood"') || text.includes('"type":"flood"')) replayBytes += text.length
        const type = /^\{"type":"([^"]+)"/.exec(text)?.[1]
        if (type === 'subscribed') { answered++; setImmediate(take) }
        if (type === 'error') { refused++; setTimeout(take, 100) }
      })
      take()
    }
  }

  const publishMs: number[] = []
  const statuses = new Map<number, number>()
  let peakRss = 0
  const start = now()
  const pending: Array<Promise<void>> = []
  for (let i = 0; now() - start < seconds * 1000; i++) {
    pending.push((async () => {
      const sentAt = now()
      const status = await publish('product:victim', 'tick', { sentAt }).catch(() => 0)
      publishMs.push(now() - sentAt)
      statuses.set(status, (statuses.get(status) ?? 0) + 1)
    })())
    if (i % 25 === 0) peakRss = Math.max(peakRss, rssMb(child.pid as number))
    await sleep(PUBLISH_EVERY_MS)
  }
  running = false
  const elapsed = (now() - start) / 1000
  const cpu = { gateway: cpuSeconds(child.pid as number) - cpuBefore.gateway, redis: await redisCpu() - cpuBefore.redis, sent: await redisSent() - cpuBefore.sent }
  await Promise.all(pending)
  await sleep(2000)
  console.log(`${users} users × ${connections} connections rewinding ${HISTORY_SIZE} of ${channels} channels for ${seconds} s:`)
  console.log(`  attackers: ${answered} subscribes answered, ${refused} refused, ${(replayBytes / 1e6 / elapsed).toFixed(1)} MB/s of replay sent`)
  console.log(`  service publishes: ${publishMs.length}, statuses ${JSON.stringify(Object.fromEntries(statuses))}, ` +
    `latency p50 ${quantile(publishMs, 0.5).toFixed(0)} / p99 ${quantile(publishMs, 0.99).toFixed(0)} / max ${quantile(publishMs, 1).toFixed(0)} ms`)
  console.log(`  victim deliveries: ${delivered.length}, latency p50 ${quantile(delivered, 0.5).toFixed(0)} / p99 ${quantile(delivered, 0.99).toFixed(0)} / max ${quantile(delivered, 1).toFixed(0)} ms`)
  console.log(`  gateway peak RSS ${peakRss.toFixed(0)} MB, CPU ${(cpu.gateway / elapsed * 100).toFixed(0)} % of a core; Redis CPU ${(cpu.redis / elapsed * 100).toFixed(0)} % of a core, sent ${(cpu.sent / 1e6 / elapsed).toFixed(1)} MB/s`)
  for (const socket of [victim, ...attackers]) socket.terminate()
} finally {
  // Leaving through the IPC channel's end lets the gateway exit normally (and write its profile).
  const exited = new Promise((resolve) => child.once('exit', resolve))
  if (child.connected) child.disconnect()
  await Promise.race([exited, sleep(10_000)])
  server.kill()
  if (broker === 'redis') await deletePrefix(redisUrl, prefix)
}
