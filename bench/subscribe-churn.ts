import { fork } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { mintToken } from '../lib/auth/token.js'
import { sleep } from './lib/clock.js'
import { ChildChannel } from './lib/ipc.js'
import { deleteClusterPrefix, deletePrefix } from './lib/redis-prefix.js'

/**
 * What a fresh channel name subscribed and left costs the gateway in CPU time: one
 * connection sends, every 100 ms, a subscribe of 127 fresh `room:` names (a presence
 * prefix by default) and their unsubscribe, for the run's length; the gateway's CPU time
 * (user + system, from /proc: Linux) over the names it answered. The budget that bounds
 * what one user can make an instance spend this way is WS_SUBSCRIBES_PER_SECOND
 * (lib/transport/user-budget.ts); here it is lifted, so the churn is measured, not refused.
 *
 *   npm run bench:subscribe-churn -- [memory|redis|cluster] [--seconds=20]
 */
const args = process.argv.slice(2)
const broker = (args.find((a) => !a.startsWith('--')) ?? 'memory') as 'memory' | 'redis' | 'cluster'
const seconds = Number(args.find((a) => a.startsWith('--seconds='))?.slice('--seconds='.length) ?? 20)
const PER_FRAME = 127
const EVERY_MS = 100
const secret = `churn-${process.pid}`
const prefix = `rtg-churn-${process.pid}:`

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const clusterNodes = process.env.REDIS_CLUSTER_NODES ?? '127.0.0.1:30001,127.0.0.1:30002,127.0.0.1:30003'
const brokerEnv: Record<string, string> = broker === 'redis'
  ? { BENCH_REDIS_URL: redisUrl, BENCH_REDIS_KEY_PREFIX: prefix }
  : broker === 'cluster'
    ? { BENCH_REDIS_CLUSTER_NODES: clusterNodes, BENCH_REDIS_KEY_PREFIX: prefix }
    : {}

/** The process's CPU time so far, in µs (utime + stime of /proc/<pid>/stat, in clock ticks of 10 ms). */
function cpuUs (pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 10_000
}

const child = fork(fileURLToPath(new URL('servers/gateway.js', import.meta.url)), [], {
  env: { ...process.env, ...brokerEnv, BENCH_JWT_SECRET: secret, BENCH_CONFIG: JSON.stringify({ WS_SUBSCRIBES_PER_SECOND: 1e9, WS_SUBSCRIBES_BURST: 1e9, NEW_CHANNELS_PER_SECOND: 1e9, NEW_CHANNELS_BURST: 1e9 }) },
  stdio: ['ignore', 'inherit', 'inherit', 'ipc']
})
const server = new ChildChannel(child, 'gateway')
try {
  const { port } = await server.event<{ port: number }>('ready', 30_000)
  const socket = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${mintToken(secret, { sub: 'churner', ttlSeconds: 3600 })}`)
  let answered = 0
  socket.on('message', (data) => { if (JSON.parse(String(data)).type === 'subscribed') answered++ })
  await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject) })
  await sleep(1000)
  const before = cpuUs(child.pid as number)
  let sent = 0
  for (const end = Date.now() + seconds * 1000; Date.now() < end; sent++) {
    const channels = Array.from({ length: PER_FRAME }, (_, i) => `room:churn-${sent}-${i}`)
    socket.send(JSON.stringify({ type: 'subscribe', payload: { channels } }))
    socket.send(JSON.stringify({ type: 'unsubscribe', payload: { channels } }))
    await sleep(EVERY_MS)
  }
  // Until every subscribe is answered (or it is clear they will not be).
  const allAnswered = (): boolean => answered >= sent
  for (const end = Date.now() + 30_000; !allAnswered() && Date.now() < end;) await sleep(100)
  const used = cpuUs(child.pid as number) - before
  const names = answered * PER_FRAME
  console.log(`${broker}: ${names} names subscribed and left (${answered} of ${sent} subscribes answered) in ${seconds} s; ` +
    `gateway CPU ${(used / 1e6).toFixed(2)} s: ${(used / names).toFixed(0)} µs per name`)
  socket.close()
} finally {
  child.kill()
  // What the run left under its prefix (each channel's stream position, the epoch base).
  if (broker === 'redis') await deletePrefix(redisUrl, prefix).catch(() => 0)
  if (broker === 'cluster') await deleteClusterPrefix(clusterNodes, prefix).catch(() => 0)
}
