import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import type { Test } from 'tap'
import WebSocket from 'ws'
import { type AppOptions, buildApp } from '../../app.js'
import { configFrom } from '../../lib/ops/config.js'
import { mintToken } from '../../lib/auth/token.js'

export const TEST_SECRET = 'test-secret-not-for-production'

type Overrides = Record<string, string | number | boolean | undefined>

export function testConfig (overrides: Overrides = {}) {
  return configFrom({ JWT_SECRET: TEST_SECRET, LOG_LEVEL: 'silent', ...overrides })
}

export function token (sub: string | undefined, roles: string[] = [], ttlSeconds: number | undefined = 3600): string {
  return mintToken(TEST_SECRET, { sub, roles, ttlSeconds })
}

export const serviceToken = () => token('svc-1', ['service'])
export const adminToken = (sub = 'admin-1') => token(sub, ['admin'])

/** A ready app (no port), closed when the test ends: for `inject`. */
export async function buildTestApp (t: Test, overrides: Overrides = {}, options: AppOptions = {}) {
  const app = await buildApp(testConfig(overrides), options)
  t.teardown(() => app.close())
  await app.ready()
  return app
}

export interface RunningServer {
  app: Awaited<ReturnType<typeof buildApp>>
  url: string
  wsUrl: string
}

/** An app listening on a free loopback port, closed when the test ends. */
export async function startServer (t: Test, overrides: Overrides = {}, options: AppOptions = {}): Promise<RunningServer> {
  const app = await buildApp(testConfig(overrides), options)
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  return { app, url: `http://127.0.0.1:${address.port}`, wsUrl: `ws://127.0.0.1:${address.port}/ws` }
}

export async function post (url: string, bearer: string | undefined, body: unknown): Promise<{ status: number, body: any, headers: Headers }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(bearer === undefined ? {} : { authorization: `Bearer ${bearer}` }) },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  })
  const text = await res.text()
  let parsed: unknown = text
  try { parsed = JSON.parse(text) } catch { /* not JSON */ }
  return { status: res.status, body: parsed, headers: res.headers }
}

/**
 * A raw TCP connection to the test server, connected, for what HTTP clients hide or refuse:
 * exact headers, pipelined requests, HTTP/1.0, a client that stops reading. `received()` is
 * everything the server has sent on it so far, as text; `closed` settles when it closes.
 */
export async function rawConnection (t: Test, url: string): Promise<{ socket: Socket, received: () => string, closed: Promise<unknown> }> {
  const socket = connect(Number(new URL(url).port), '127.0.0.1')
  t.teardown(() => socket.destroy())
  await once(socket, 'connect')
  let text = ''
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => { text += chunk })
  return { socket, received: () => text, closed: new Promise((resolve) => socket.once('close', resolve)) }
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

type Frame = Record<string, any>

/**
 * A real `ws` client that queues every frame it receives, so tests can wait for the
 * next frame matching a predicate (and assert that others did not arrive).
 */
export class WsClient {
  readonly frames: Frame[] = []
  /**
   * Presence frames (not events: they come on their own schedule), kept apart so tests about
   * events need not skip them; `nextPresence` waits for one.
   */
  readonly presence: Frame[] = []
  private presenceWaiters: Array<{ match: (f: Frame) => boolean, resolve: (f: Frame) => void }> = []
  private readonly waiters: Array<{ match: (f: Frame) => boolean, resolve: (f: Frame) => void }> = []
  readonly closed: Promise<{ code: number, reason: string }>

  private constructor (readonly socket: WebSocket) {
    socket.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as Frame
      if (frame.type === 'presence' && frame.id === undefined) {
        const w = this.presenceWaiters.findIndex((waiter) => waiter.match(frame))
        if (w >= 0) this.presenceWaiters.splice(w, 1)[0].resolve(frame)
        else this.presence.push(frame)
        return
      }
      const i = this.waiters.findIndex((w) => w.match(frame))
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(frame)
      else this.frames.push(frame)
    })
    this.closed = once(socket, 'close').then(([code, reason]) => ({ code: code as number, reason: String(reason) }))
  }

  /** Connects and waits for `system:connected`; rejects with the HTTP status on refusal. */
  static async connect (t: Test, wsUrl: string, bearer?: string, opts: { viaHeader?: boolean } = {}): Promise<WsClient> {
    const url = bearer !== undefined && opts.viaHeader !== true ? `${wsUrl}?token=${encodeURIComponent(bearer)}` : wsUrl
    const headers = bearer !== undefined && opts.viaHeader === true ? { authorization: `Bearer ${bearer}` } : undefined
    const socket = new WebSocket(url, { headers })
    const client = new WsClient(socket)
    socket.on('error', () => { /* surfaced through the connect promise or `closed` */ })
    t.teardown(() => { if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CLOSING) socket.terminate() })
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve())
      socket.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { statusCode: res.statusCode })))
      socket.once('error', reject)
    })
    client.greeting = await client.next((f) => f.type === 'system:connected')
    return client
  }

  greeting: Frame = {}

  send (frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame))
  }

  /** The next frame matching `match` (already received or still to come). */
  next (match: (f: Frame) => boolean = () => true, timeoutMs = 5000): Promise<Frame> {
    const i = this.frames.findIndex(match)
    if (i >= 0) return Promise.resolve(this.frames.splice(i, 1)[0])
    return new Promise((resolve, reject) => {
      const waiter = { match, resolve: (f: Frame) => { clearTimeout(timer); resolve(f) } }
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1)
        reject(new Error(`no matching frame within ${timeoutMs} ms; queued: ${JSON.stringify(this.frames).slice(0, 500)}`))
      }, timeoutMs)
      this.waiters.push(waiter)
    })
  }

  /** The next presence frame (pushed, not asked for) matching `match`. */
  nextPresence (match: (f: Frame) => boolean = () => true, timeoutMs = 8000): Promise<Frame> {
    const i = this.presence.findIndex(match)
    if (i >= 0) return Promise.resolve(this.presence.splice(i, 1)[0])
    return new Promise((resolve, reject) => {
      const waiter = { match, resolve: (f: Frame) => { clearTimeout(timer); resolve(f) } }
      const timer = setTimeout(() => {
        this.presenceWaiters.splice(this.presenceWaiters.indexOf(waiter), 1)
        reject(new Error(`no matching presence frame within ${timeoutMs} ms; queued: ${JSON.stringify(this.presence).slice(0, 500)}`))
      }, timeoutMs)
      this.presenceWaiters.push(waiter)
    })
  }

  /** Sends a frame with an id and waits for the answer carrying the same id. */
  async request (frame: Frame): Promise<Frame> {
    const id = frame.id ?? `r${Math.random().toString(36).slice(2)}`
    this.send({ ...frame, id })
    return await this.next((f) => f.id === id)
  }

  async subscribe (channels: string[], since?: Record<string, { offset: number, epoch?: string }>): Promise<Frame> {
    return await this.request({ type: 'subscribe', payload: { channels, since } })
  }

  /** Events (and resets: frames with a channel) received so far and not yet taken. */
  events (channel?: string): Frame[] {
    return this.frames.filter((f) => f.channel !== undefined && (channel === undefined || f.channel === channel))
  }

  close (): void {
    this.socket.close()
  }
}

export interface SseEvent { id?: string, event: string, data: any }

/**
 * A real SSE reader over fetch: parses the stream as EventSource does and queues events.
 * `comments` counts `:` lines (heartbeats).
 */
export class SseClient {
  readonly events: SseEvent[] = []
  /** `event: presence` blocks, kept apart from the events (see WsClient.presence). */
  readonly presence: SseEvent[] = []
  comments = 0
  status = 0
  headers = new Headers()
  private readonly controller = new AbortController()
  private waiters: Array<() => void> = []
  ended = false

  static async open (t: Test, url: string, headers: Record<string, string> = {}): Promise<SseClient> {
    const client = new SseClient()
    t.teardown(() => client.close())
    const res = await fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: client.controller.signal })
    client.status = res.status
    client.headers = res.headers
    if (res.status !== 200 || res.body === null) {
      client.body = await res.text()
      client.ended = true
      return client
    }
    void client.read(res.body)
    return client
  }

  body = ''

  private async read (body: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder()
    let buffer = ''
    try {
      for await (const chunk of body) {
        buffer += decoder.decode(chunk, { stream: true })
        let end
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end)
          buffer = buffer.slice(end + 2)
          this.parse(block)
        }
      }
    } catch { /* aborted */ }
    this.ended = true
    this.wake()
  }

  private parse (block: string): void {
    let id: string | undefined
    let event = 'message'
    const data: string[] = []
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) { this.comments++; continue }
      const colon = line.indexOf(':')
      const field = colon < 0 ? line : line.slice(0, colon)
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
      if (field === 'id') id = value
      else if (field === 'event') event = value
      else if (field === 'data') data.push(value)
    }
    if (data.length === 0) { this.wake(); return }
    const text = data.join('\n')
    let parsed: unknown = text
    try { parsed = JSON.parse(text) } catch { /* plain text */ }
    if (event === 'presence') this.presence.push({ id, event, data: parsed })
    else this.events.push({ id, event, data: parsed })
    this.wake()
  }

  private wake (): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }

  /** Waits until `count` events matching `match` were received; returns them. */
  async waitFor (count: number, match: (e: SseEvent) => boolean = () => true, timeoutMs = 5000): Promise<SseEvent[]> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.events.filter(match)
      if (found.length >= count) return found
      if (this.ended) throw new Error(`stream ended with ${found.length}/${count} events`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`only ${found.length}/${count} events within ${timeoutMs} ms: ${JSON.stringify(this.events).slice(0, 500)}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  close (): void {
    this.controller.abort()
  }
}

/**
 * Services the suite needs (Redis, Kafka): outside CI a missing one skips the test;
 * with CI=true it fails, so CI can never pass by skipping.
 */
export function requireService (t: Test, name: string, available: boolean): boolean {
  if (available) return true
  if (process.env.CI === 'true') {
    t.fail(`${name} is not reachable and CI=true: run npm run services:start`)
  } else {
    t.skip(`${name} is not reachable (npm run services:start)`, async () => {})
  }
  return false
}
