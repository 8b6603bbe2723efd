import { fork, spawn } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { mintToken } from '../lib/auth/token.js'
import { sleep } from './lib/clock.js'
import { ChildChannel } from './lib/ipc.js'
import { parseStraceSummary } from './lib/strace.js'

/**
 * What one connect costs a server in system calls, counted with `strace -c -f` attached to
 * the server process for one round of N connects (after a warm-up round): unlike CPU time on
 * a shared machine, the counts do not move with the load (bench/README.md, "Reconnect storm").
 * Bare `ws` (plain connect) against the gateway on its memory broker (a token, then a
 * `subscribe` of `user:<id>` and two shared channels, as the storm's clients do, answered).
 * Presence is off for the shared channels (PRESENCE_CHANNELS=none:): its pushes every
 * interval to every subscriber are fan-out, not connect cost.
 *
 *   npm run bench:connect-syscalls -- [N=2000] [--presence]
 */
const args = process.argv.slice(2)
const count = Number(args.find((a) => !a.startsWith('--')) ?? 2000)
const presence = args.includes('--presence')
const CONCURRENCY = 250
const secret = `syscalls-${process.pid}`
const script = (name: string) => fileURLToPath(new URL(name, import.meta.url))

interface Counts { calls: Map<string, number>, connects: number }

async function measure (kind: 'bare-ws' | 'gateway'): Promise<Counts> {
  const child = fork(script(kind === 'gateway' ? 'servers/gateway.js' : 'servers/bare-ws.js'), kind === 'gateway' ? [] : ['naive'], {
    env: { ...process.env, BENCH_JWT_SECRET: secret, BENCH_CONFIG: JSON.stringify(presence ? {} : { PRESENCE_CHANNELS: 'none:' }) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  const server = new ChildChannel(child, kind)
  try {
    const { port } = await server.event<{ port: number }>('ready', 30_000)
    const url = kind === 'gateway' ? `ws://127.0.0.1:${port}/ws` : `ws://127.0.0.1:${port}/`
    await round(kind, url) // warm-up: JIT, pools
    const out = join(tmpdir(), `rtg-syscalls-${process.pid}-${kind}.txt`)
    const tracer = spawn('strace', ['-c', '-f', '-o', out, '-p', String(child.pid)], { stdio: 'ignore' })
    await sleep(1000) // attached
    await round(kind, url)
    tracer.kill('SIGINT')
    await new Promise((resolve) => tracer.on('exit', resolve))
    const calls = parseStraceSummary(readFileSync(out, 'utf8'))
    rmSync(out, { force: true })
    return { calls, connects: count }
  } finally {
    child.kill('SIGKILL')
  }
}

/** N connects, CONCURRENCY at a time, each ready (bare: open; gateway: subscribe answered); then all closed. */
async function round (kind: 'bare-ws' | 'gateway', url: string): Promise<void> {
  const sockets: WebSocket[] = []
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++
      sockets.push(await (kind === 'gateway' ? openGateway(url, i) : openPlain(url)))
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  for (const socket of sockets) socket.terminate()
  await sleep(1500)
}

function openPlain (url: string): Promise<WebSocket> {
  const ws = new WebSocket(url, { perMessageDeflate: false })
  return new Promise((resolve, reject) => {
    ws.once('error', reject)
    ws.once('open', () => resolve(ws))
  })
}

function openGateway (url: string, i: number): Promise<WebSocket> {
  const token = mintToken(secret, { sub: `u${i}`, ttlSeconds: 3600 })
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false })
  return new Promise((resolve, reject) => {
    ws.once('error', reject)
    ws.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as { type: string }
      if (frame.type === 'system:connected') {
        ws.send(JSON.stringify({ type: 'subscribe', id: 's', payload: { channels: [`user:u${i}`, 'room:storm-a', 'room:storm-b'] } }))
      } else if (frame.type === 'subscribed') {
        resolve(ws)
      } else if (frame.type === 'error') {
        reject(new Error(data.toString()))
      }
    })
  })
}

const SHOWN = ['accept4', 'read', 'write', 'writev', 'epoll_ctl', 'epoll_pwait', 'futex']
const results = { 'bare-ws': await measure('bare-ws'), gateway: await measure('gateway') }
console.log(`System calls per connect, ${count} connects (strace -c -f on the server process; presence ${presence ? 'on' : 'off'}):`)
console.log('| syscall | bare ws | gateway |\n| --- | --- | --- |')
for (const name of SHOWN) {
  const per = (c: Counts) => ((c.calls.get(name) ?? 0) / c.connects).toFixed(2)
  console.log(`| ${name} | ${per(results['bare-ws'])} | ${per(results.gateway)} |`)
}
const writes = (c: Counts) => (['write', 'writev', 'sendmsg'].reduce((sum, n) => sum + (c.calls.get(n) ?? 0), 0) / c.connects).toFixed(2)
console.log(`| writes of any kind | ${writes(results['bare-ws'])} | ${writes(results.gateway)} |`)
