import WebSocket from 'ws'
import { mintToken } from '../lib/auth/token.js'
import { now } from './lib/clock.js'
import { serve } from './lib/ipc.js'

/**
 * A load-generator process for the reconnect storm (bench/storm.ts). Its clients each
 * hold `user:<id>` and the shared channels; every event they receive is checked against
 * what the channel published (docs/protocol.md, "subscribe ... with `since`"): each offset
 * after the client's first position exactly once, across every drop and resume. A
 * channel answered `recovered: false` is counted apart, and its offsets up to the new
 * position are excused (the protocol's promise: nothing rather than a partial replay).
 *
 * Each client keeps its token across reconnects, as a browser does: the same token is
 * verified again on every resume.
 */
interface Track {
  /** The position at the first subscribe: offsets after it are expected. */
  start: number
  /** Highest offset received (or the position a resume reported). */
  last: number
  epoch?: string
  /** Offsets up to here need not arrive (a `recovered: false` moved the client to the live edge). */
  excused: number
  /** seen[offset - start - 1]: how often each offset arrived. */
  seen: Uint8Array
}

interface Client {
  index: number
  token: string
  ws?: WebSocket
  ready: boolean
  tracks: Map<string, Track>
}

interface ConnectRequest {
  kind: 'gateway' | 'ws'
  url: string
  from: number
  count: number
  concurrency: number
  secret?: string
  shared?: string[]
  addresses?: number
}

const HANDSHAKE_TIMEOUT_MS = 30_000
let clients: Client[] = []
let plain: WebSocket[] = []
let shared: string[] = []
/** Source addresses 127.0.0.1…n, by client index: each storm leaves C sockets in TIME_WAIT. */
let addresses = 1
let closedByServer = 0
let unrecovered = 0
let otherErrors = 0

const userChannel = (c: Client) => `user:u${c.index}`

function record (track: Track, offset: number): void {
  const i = offset - track.start - 1
  if (i < 0) return
  if (i >= track.seen.length) {
    const grown = new Uint8Array(Math.max(i + 1, track.seen.length * 2))
    grown.set(track.seen)
    track.seen = grown
  }
  if (track.seen[i] < 255) track.seen[i]++
  if (offset > track.last) track.last = offset
}

interface Position { offset: number, epoch?: string }
interface Frame {
  type: string
  id?: string
  channel?: string
  offset?: number
  payload?: { positions?: Record<string, Position>, recovered?: Record<string, boolean> }
}

/** Opens one gateway client and resolves once its subscribe (with `since` when resuming) is answered. */
function openGateway (client: Client, url: string, resume: boolean): Promise<number> {
  const ws = new WebSocket(url, {
    headers: { authorization: `Bearer ${client.token}` }, perMessageDeflate: false, handshakeTimeout: HANDSHAKE_TIMEOUT_MS, localAddress: sourceOf(client.index)
  })
  client.ws = ws
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('not resumed in time')), HANDSHAKE_TIMEOUT_MS + 5000)
    let settled = false
    function fail (err: Error): void {
      if (settled) return
      settled = true
      clearTimeout(timer)
      ws.terminate()
      reject(err)
    }
    ws.on('error', fail)
    ws.on('close', (code) => {
      if (settled) {
        // A socket replaced by a resume closing late says nothing about the new one.
        if (client.ws !== ws) return
        if (client.ready) closedByServer++
        client.ready = false
        return
      }
      fail(new Error(`closed ${code} before resumed`))
    })
    ws.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as Frame
      if (typeof frame.offset === 'number' && frame.channel !== undefined) {
        const track = client.tracks.get(frame.channel)
        if (track !== undefined) record(track, frame.offset)
        return
      }
      if (frame.type === 'system:connected') {
        const channels = [userChannel(client), ...shared]
        const since = resume
          ? Object.fromEntries([...client.tracks].map(([ch, t]) => [ch, t.epoch === undefined ? { offset: t.last } : { offset: t.last, epoch: t.epoch }]))
          : undefined
        ws.send(JSON.stringify({ type: 'subscribe', id: 'storm', payload: since === undefined ? { channels } : { channels, since } }))
      } else if (frame.type === 'subscribed' && frame.id === 'storm') {
        const positions = frame.payload?.positions ?? {}
        const recovered = frame.payload?.recovered ?? {}
        for (const [ch, position] of Object.entries(positions)) {
          const track = client.tracks.get(ch)
          if (track === undefined) {
            client.tracks.set(ch, { start: position.offset, last: position.offset, epoch: position.epoch, excused: position.offset, seen: new Uint8Array(64) })
          } else if (resume && recovered[ch] === false) {
            unrecovered++
            track.last = Math.max(track.last, position.offset)
            track.excused = Math.max(track.excused, position.offset)
            track.epoch = position.epoch
          }
        }
        settled = true
        clearTimeout(timer)
        client.ready = true
        resolve(now())
      } else if (frame.type === 'error') {
        otherErrors++
        fail(new Error(`error frame: ${data.toString().slice(0, 200)}`))
      }
    })
  })
}

const sourceOf = (index: number) => addresses > 1 ? `127.0.0.${1 + (index % addresses)}` : undefined

function openPlain (url: string, index: number): Promise<number> {
  const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: HANDSHAKE_TIMEOUT_MS, localAddress: sourceOf(index) })
  return new Promise((resolve, reject) => {
    ws.on('error', reject)
    ws.on('open', () => {
      ws.removeAllListeners('error')
      ws.on('error', () => {})
      plain.push(ws)
      resolve(now())
    })
  })
}

/** Runs `open` for every client, `concurrency` at a time; the time the last one was ready. */
async function each (count: number, concurrency: number, open: (i: number) => Promise<number>) {
  const started = now()
  let next = 0
  let ok = 0
  let lastAt = started
  const errors = new Map<string, number>()
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++
      try {
        lastAt = Math.max(lastAt, await open(i))
        ok++
      } catch (err) {
        const message = (err as Error).message
        errors.set(message, (errors.get(message) ?? 0) + 1)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
  return { ok, failed: count - ok, errors: Object.fromEntries(errors), started, lastAt }
}

serve({
  connect: async (request) => {
    const r = request as unknown as ConnectRequest
    addresses = r.addresses ?? 1
    if (r.kind === 'ws') return await each(r.count, r.concurrency, async (i) => await openPlain(r.url, r.from + i))
    shared = r.shared ?? []
    clients = Array.from({ length: r.count }, (_, i) => ({
      index: r.from + i,
      token: mintToken(r.secret ?? '', { sub: `u${r.from + i}`, ttlSeconds: 3600 }),
      ready: false,
      tracks: new Map()
    }))
    return await each(clients.length, r.concurrency, async (i) => await openGateway(clients[i], r.url, false))
  },
  /** Every client resumes on `url` with `since` (its last offsets); resolves when all have been answered. */
  resume: async (request) => {
    const url = String(request.url)
    return await each(clients.length, Number(request.concurrency), async (i) => await openGateway(clients[i], url, true))
  },
  /** Drops every socket from the client side (no close handshake), as a network blip would. */
  drop: () => {
    for (const c of clients) {
      c.ready = false
      c.ws?.terminate()
    }
    return { droppedAt: now() }
  },
  closePlain: () => {
    for (const ws of plain) ws.terminate()
    const closed = plain.length
    plain = []
    return { closed }
  },
  status: () => ({ ready: clients.filter((c) => c.ready).length, closedByServer }),
  /** This process's CPU time, µs: the clients run on the same two cores as the servers. */
  cpu: () => ({ ...process.cpuUsage() }),
  /**
   * Per channel, every offset in (start, final] must have arrived once: `finals` gives each
   * channel's last offset as the gateway's history reports it (channels not named: the
   * highest the client saw).
   */
  check: (request) => {
    const finals = request.finals as Record<string, number>
    let lost = 0
    let duplicates = 0
    let expected = 0
    let lossyClients = 0
    for (const c of clients) {
      // One that did not resume missed everything since: counted as not resumed, not here.
      if (!c.ready) continue
      let clientLost = 0
      for (const [ch, t] of c.tracks) {
        const final = finals[ch] ?? t.last
        for (let offset = Math.max(t.start, t.excused) + 1; offset <= final; offset++) {
          const n = offset - t.start - 1 < t.seen.length ? t.seen[offset - t.start - 1] : 0
          expected++
          if (n === 0) clientLost++
          else if (n > 1) duplicates += n - 1
        }
        // Repeats of excused offsets count too.
        for (let offset = t.start + 1; offset <= Math.min(final, Math.max(t.start, t.excused)); offset++) {
          const n = t.seen[offset - t.start - 1] ?? 0
          if (n > 1) duplicates += n - 1
        }
      }
      lost += clientLost
      if (clientLost > 0) lossyClients++
    }
    return { lost, duplicates, expected, lossyClients, unrecovered, otherErrors, clients: clients.length }
  },
  close: () => {
    for (const c of clients) c.ws?.terminate()
    for (const ws of plain) ws.terminate()
    return { closed: clients.length }
  }
})
