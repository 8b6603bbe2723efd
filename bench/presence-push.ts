import WebSocket from 'ws'
import { mintToken } from '../lib/auth/token.js'
import { sleep } from './lib/clock.js'
import type { ChildChannel } from './lib/ipc.js'
import { median } from './measure.js'
import { type Settings, shutdown, startServer } from './scenario.js'
import { BENCH_CHANNEL } from './servers/control.js'

/**
 * `presence-push`: what a presence push costs the gateway per subscriber it reaches, set
 * against what an event costs at the same cadence, on one gateway (memory broker) with C
 * clients on `room:bench` (a presence channel by default).
 *
 * - presence: one more client joins and leaves the channel every 35 ms, so its counts change
 *   within every PRESENCE_INTERVAL_MS (100 ms here) and each interval pushes them to all C;
 * - events: the same clients, nobody joining or leaving, 10 events/s published through the
 *   broker API (the `steady` control op): one event to all C per 100 ms.
 * Both are one frame per socket per 100 ms, so each frame is a socket write of its own:
 * the ratio is the cost of a presence frame's own work against an event frame's.
 * Phases alternate (A B B A …); gateway CPU from its own `process.cpuUsage`.
 */
export interface PresencePushResult {
  connections: number
  runs: Array<{ phase: 'presence' | 'events', frames: number, seconds: number, cpuUsPerFrame: number }>
  presenceUsPerFrame: number
  eventUsPerFrame: number
  error?: string
}

const INTERVAL_MS = 100
const FLAP_MS = 35
const EVENTS_PER_SEC = 1000 / INTERVAL_MS

interface Counting { presence: number, events: number }

/** A client on `room:bench` that counts the presence and event frames it reads. */
async function openCounting (url: string, token: string, counts: Counting): Promise<WebSocket> {
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false })
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('presence-push client: not subscribed in 30 s')) }, 30_000)
    ws.on('error', (err) => { clearTimeout(timer); reject(err) })
    ws.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as { type: string, id?: string }
      if (frame.type === 'presence') counts.presence++
      else if (frame.type === 'bench') counts.events++
      else if (frame.type === 'system:connected') ws.send(JSON.stringify({ type: 'subscribe', id: 's', payload: { channels: [BENCH_CHANNEL] } }))
      else if (frame.type === 'subscribed' && frame.id === 's') { clearTimeout(timer); resolve(ws) } else if (frame.type === 'error') { clearTimeout(timer); ws.terminate(); reject(new Error(`presence-push client: ${data.toString().slice(0, 200)}`)) }
    })
  })
}

async function cpuUs (server: ChildChannel): Promise<number> {
  const t = await server.request<{ user: number, system: number }>({ op: 'cpu' }, 10_000)
  return t.user + t.system
}

export async function presencePush (settings: Settings, connections: number, rounds: number, phaseMs: number, track: (c: ChildChannel) => void): Promise<PresencePushResult> {
  const result: PresencePushResult = { connections, runs: [], presenceUsPerFrame: NaN, eventUsPerFrame: NaN }
  const secret = `bench-${process.pid}-${Date.now()}`
  const gateway = startServer('gateway', secret, settings, track, { BENCH_CONFIG: JSON.stringify({ PRESENCE_INTERVAL_MS: INTERVAL_MS }) }, 'gateway-presence-push')
  const clients: WebSocket[] = []
  const counts: Counting = { presence: 0, events: 0 }
  try {
    const { port } = await gateway.event<{ port: number }>('ready', 30_000)
    const url = `ws://127.0.0.1:${port}/ws`
    const token = (i: number | string) => mintToken(secret, { sub: `pp${i}`, ttlSeconds: 3600 })
    for (let i = 0; i < connections; i += 200) {
      clients.push(...await Promise.all(Array.from({ length: Math.min(200, connections - i) }, async (_, k) => await openCounting(url, token(i + k), counts))))
    }
    const flapper = await openCounting(url, token('flap'), { presence: 0, events: 0 })
    clients.push(flapper)
    await sleep(1000)
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? ['presence', 'events'] as const : ['events', 'presence'] as const
      for (const phase of order) {
        let flapping: NodeJS.Timeout | undefined
        let joined = true
        if (phase === 'presence') {
          flapping = setInterval(() => {
            flapper.send(JSON.stringify({ type: joined ? 'unsubscribe' : 'subscribe', payload: { channels: [BENCH_CHANNEL] } }))
            joined = !joined
          }, FLAP_MS)
          await sleep(500) // pushes under way before counting
        }
        const before = { ...counts }
        const cpu0 = await cpuUs(gateway)
        const t0 = performance.now()
        if (phase === 'events') await gateway.request({ op: 'steady', rate: EVENTS_PER_SEC, durationMs: phaseMs }, phaseMs + 30_000)
        else await sleep(phaseMs)
        await sleep(200) // the last frames read
        const cpu = await cpuUs(gateway) - cpu0
        const seconds = (performance.now() - t0) / 1000
        clearInterval(flapping)
        if (!joined) flapper.send(JSON.stringify({ type: 'subscribe', payload: { channels: [BENCH_CHANNEL] } }))
        const frames = phase === 'presence' ? counts.presence - before.presence : counts.events - before.events
        result.runs.push({ phase, frames, seconds, cpuUsPerFrame: cpu / Math.max(1, frames) })
        await sleep(500) // the counts settle before the next phase
      }
    }
    result.presenceUsPerFrame = median(result.runs.filter((x) => x.phase === 'presence').map((x) => x.cpuUsPerFrame))
    result.eventUsPerFrame = median(result.runs.filter((x) => x.phase === 'events').map((x) => x.cpuUsPerFrame))
  } catch (err) {
    result.error = (err as Error).message
  } finally {
    for (const ws of clients) ws.terminate()
    await shutdown([gateway], [])
  }
  return result
}
