/**
 * The gateway's browser client, served as /client.js (ES module, no dependencies; also
 * runs in Node 20 for tests, given the `ws` package as `WebSocket`).
 *
 *   import { connect } from '/client.js'
 *   const rt = connect({ token, channels: ['product:7'] })
 *   rt.on('inventory:updated', (e) => render(e.payload))   // or '*' for every event
 *   rt.on('state', ({ state }) => badge(state))   // connecting | open | reconnecting | closed
 *   rt.on('recovery', ({ channels }) => reload(channels))  // history gone: reload state
 *
 * WebSocket first, Server-Sent Events when a WebSocket cannot connect (a proxy that
 * refuses the upgrade): same events, same API. Reconnects with exponential backoff and
 * jitter and resumes every channel from the last position it saw (`since` over
 * WebSocket, a Last-Event-ID cursor over SSE).
 *
 * Client events: `state` (StateChange), `open` ({transport, connectionId, userId,
 * channels, resumed}: live on every channel), `recovery` ({recovered: false, channels}),
 * `error` (server `error` frames; `unauthorized`/`forbidden` refusals over SSE;
 * `token_expired` on close 4001).
 *
 * Size as built by `npm run build` (dist/client, comments stripped, not minified): the
 * seven modules a browser loads come to about 23 KB, 5.6 KB gzipped.
 */
import { Emitter, type Handler } from './emitter.js'
import type { ConnectionState, ConnectOptions, RealtimeEvent, StateChange } from './options.js'
import type { Position } from './positions.js'
import { ReconnectPolicy } from './reconnect-policy.js'
import { openEventStream } from './sse-transport.js'
import { Subscriptions } from './subscriptions.js'
import type { ServerFrame, Transport, TransportClosed, TransportKind } from './transport.js'
import { openWebSocket, type WebSocketConstructor } from './ws-transport.js'

export type { BackoffOptions, ConnectionState, ConnectOptions, RealtimeEvent, StateChange } from './options.js'
export type { Position } from './positions.js'
export type { TransportKind } from './transport.js'
export type { WebSocketConstructor, WebSocketLike } from './ws-transport.js'

interface Pending { resolve(value: any): void, reject(err: Error): void, since?: Record<string, Position> }

/** WebSocket close code of an expired token (docs/protocol.md, WebSocket). */
const TOKEN_EXPIRED = 4001

/** Client-side events; a channel event with one of these types reaches only '*' handlers. */
const LIFECYCLE = new Set(['state', 'open', 'recovery', 'error', 'presence'])

export function connect (options: ConnectOptions = {}): RealtimeClient {
  return new RealtimeClient(options)
}

export class RealtimeClient {
  state: ConnectionState = 'connecting'
  /** The live connection's user and id (from its greeting), null until then. */
  userId: string | null = null
  connectionId: string | null = null

  private readonly emitter = new Emitter()
  private readonly subs: Subscriptions
  private readonly pending = new Map<string, Pending>()
  private readonly reopenWaiters: Array<() => void> = []
  private current: Transport | null = null
  private greeted = false
  private everOpened = false
  private nextKind: TransportKind
  private readonly policy: ReconnectPolicy
  private seq = 0
  private timer: ReturnType<typeof setTimeout> | undefined
  private token: ConnectOptions['token']
  private readonly WebSocketImpl: WebSocketConstructor | undefined
  private readonly wsUrl: string
  private readonly sseUrl: string

  constructor (private readonly options: ConnectOptions) {
    const base = (options.url ?? (globalThis as any).location?.origin ?? '').replace(/\/+$/, '')
    if (base === '' && (options.wsUrl === undefined || options.sseUrl === undefined)) throw new Error('connect: url is required outside a browser')
    this.wsUrl = options.wsUrl ?? base.replace(/^http/, 'ws') + '/ws'
    this.sseUrl = options.sseUrl ?? base.replace(/^ws/, 'http') + '/sse'
    this.WebSocketImpl = options.WebSocket ?? (globalThis as any).WebSocket
    const transports = (options.transports ?? ['ws', 'sse']).filter((k) => k !== 'ws' || this.WebSocketImpl !== undefined)
    if (transports.length === 0) throw new Error('connect: no usable transport (pass a WebSocket implementation or allow sse)')
    this.policy = new ReconnectPolicy(transports, options.backoff)
    this.nextKind = transports[0]
    this.token = options.token
    this.subs = new Subscriptions(options.channels ?? [])
    // Started on the next tick, so handlers the app adds right after connect() see everything.
    this.timer = setTimeout(() => {
      this.setState('connecting', { transport: this.nextKind })
      void this.attempt()
    }, 0)
  }

  /** The transport in use, or null between connections. */
  get transport (): TransportKind | null {
    return this.greeted ? this.current?.kind ?? null : null
  }

  /** Listens for an event type, '*' (every channel event) or a client event; returns an unsubscriber. */
  on (type: string, handler: Handler): () => void {
    return this.emitter.on(type, handler)
  }

  off (type: string, handler: Handler): void {
    this.emitter.off(type, handler)
  }

  /** Adds channels; settles once the server acknowledged (or at once while disconnected). */
  subscribe (channels: string | string[]): Promise<void> {
    const fresh = this.subs.add(list(channels))
    if (fresh.length === 0 || !this.greeted || this.current === null) return Promise.resolve()
    if (this.current.kind === 'sse') return this.reopenStream()
    return quiet(this.request({ type: 'subscribe', payload: { channels: fresh } }).then(() => undefined))
  }

  unsubscribe (channels: string | string[]): Promise<void> {
    const gone = this.subs.remove(list(channels))
    if (gone.length === 0 || !this.greeted || this.current === null) return Promise.resolve()
    if (this.current.kind === 'sse') return this.reopenStream()
    return quiet(this.request({ type: 'unsubscribe', payload: { channels: gone } }).then(() => undefined))
  }

  /**
   * Hands the connection a new token and uses it for every later reconnect. Over
   * WebSocket it is `auth:refresh` (rejected with the server's `forbidden` if refused,
   * keeping the old token); an SSE stream, which cannot be told, is reopened with it
   * and resumes from its cursor.
   */
  refreshToken (token: string): Promise<void> {
    if (!this.greeted || this.current === null) {
      this.token = token
      return Promise.resolve()
    }
    if (this.current.kind === 'sse') {
      this.token = token
      return this.reopenStream()
    }
    return quiet(this.request({ type: 'auth:refresh', payload: { token } }).then(() => { this.token = token }))
  }

  /** The last position seen in every channel (what a reconnect resumes from). */
  lastPositions (): Record<string, Position> {
    return this.subs.positions.snapshot()
  }

  close (): void {
    if (this.state === 'closed') return
    clearTimeout(this.timer)
    this.current?.close()
    this.dropConnection()
    for (const resolve of this.reopenWaiters.splice(0)) resolve()
    this.setState('closed')
  }

  private async attempt (): Promise<void> {
    this.timer = undefined
    const kind = this.nextKind
    let token: string | undefined
    try {
      token = typeof this.token === 'function' ? await this.token() : this.token
    } catch (err) {
      return this.closed(null, { reason: `token: ${err instanceof Error ? err.message : String(err)}` })
    }
    if (this.state === 'closed' || this.current !== null) return
    const events = {
      frame: (frame: ServerFrame) => { if (this.current === transport) this.onFrame(frame) },
      closed: (info: TransportClosed) => { if (this.current === transport) this.closed(transport, info) }
    }
    const transport: Transport = kind === 'ws'
      ? openWebSocket(withQuery(this.wsUrl, 'token', token), this.WebSocketImpl as WebSocketConstructor, events)
      : openEventStream(this.streamUrl(), {
        fetch: this.options.fetch ?? globalThis.fetch.bind(globalThis),
        token,
        lastEventId: this.subs.positions.cursor(this.subs.all()),
        idleTimeoutMs: this.options.sseIdleTimeoutMs ?? 45_000
      }, events)
    this.current = transport
    this.greeted = false
    this.timer = setTimeout(() => {
      if (this.current !== transport || this.greeted) return
      transport.close()
      this.closed(transport, { reason: 'connect timeout' })
    }, this.options.connectTimeoutMs ?? 10_000)
  }

  private onFrame (frame: ServerFrame): void {
    if (frame.cursor !== undefined) this.subs.positions.readCursor(frame.cursor)
    if (frame.type === 'presence') return this.onPresence(frame)
    if (frame.type === 'system:reset') return this.onReset(frame)
    if (frame.channel !== undefined) return this.onEvent(frame as RealtimeEvent)
    const pending = frame.id === undefined ? undefined : this.pending.get(String(frame.id))
    if (pending !== undefined) this.pending.delete(String(frame.id))
    switch (frame.type) {
      case 'system:connected':
        return this.onGreeting(frame.payload)
      case 'system:recovery':
        return this.emit('recovery', { recovered: false, channels: this.subs.all() })
      case 'subscribed': {
        const { lost, ready } = this.subs.acknowledged(frame.payload, pending?.since)
        if (lost.length > 0) this.emit('recovery', { recovered: false, channels: lost })
        this.show(ready)
        break
      }
      case 'error':
        this.emit('error', { ...frame.payload, id: frame.id })
        return pending?.reject(Object.assign(new Error(frame.payload?.message ?? 'error'), { code: frame.payload?.code }))
    }
    pending?.resolve(frame.payload)
  }

  /** Live counts of a channel (not an event: no offset); also the answer to presence:get. */
  private onPresence (frame: ServerFrame): void {
    const counts = { channel: frame.channel, connections: frame.payload?.connections, users: frame.payload?.users }
    const pending = frame.id === undefined ? undefined : this.pending.get(String(frame.id))
    if (pending !== undefined) {
      this.pending.delete(String(frame.id))
      pending.resolve(counts)
    }
    this.emit('presence', counts)
  }

  /** The channel's stream restarted: its offsets count on from the position given; the app reloads it. */
  private onReset (frame: ServerFrame): void {
    const channel = frame.channel as string
    const position = frame.payload?.position
    if (position !== undefined) this.subs.positions.set(channel, position)
    this.emit('recovery', { recovered: false, channels: [channel], reset: true })
  }

  private onEvent (event: RealtimeEvent): void {
    const copy = { type: event.type, channel: event.channel, offset: event.offset, payload: event.payload, ts: event.ts }
    this.show(this.subs.accept(copy))
  }

  private show (events: readonly RealtimeEvent[]): void {
    for (const event of events) {
      if (!LIFECYCLE.has(event.type)) this.emit(event.type, event)
      this.emit('*', event)
    }
  }

  private onGreeting (payload: { connectionId: string, userId: string | null, channels: string[] }): void {
    const kind = (this.current as Transport).kind
    clearTimeout(this.timer)
    const resumed = this.everOpened
    this.everOpened = true
    this.greeted = true
    this.policy.opened(kind)
    this.connectionId = payload.connectionId
    this.userId = payload.userId
    this.subs.defaults = kind === 'ws' ? payload.channels : payload.channels.filter((c) => !this.subs.desired.has(c))
    // 'open' means live on every channel: over WebSocket, once the subscriptions are acknowledged.
    const transport = this.current
    const subscribed = kind === 'ws' ? this.resubscribe() : Promise.resolve()
    void subscribed.then(() => {
      if (this.current !== transport) return
      this.setState('open')
      this.emit('open', { transport: kind, connectionId: payload.connectionId, userId: payload.userId, channels: this.subs.all(), resumed })
      for (const resolve of this.reopenWaiters.splice(0)) resolve()
    })
  }

  /**
   * Over WebSocket the server joins the user's own channel at the live edge; a subscribe
   * with `since` resumes it, replaying what was missed before the live events sent
   * meanwhile, which are held until then (see Subscriptions). App channels follow in a
   * frame of their own, so a refused one cannot cost the user channel.
   */
  private resubscribe (): Promise<unknown> {
    const requests: Array<Promise<unknown>> = []
    if (this.subs.defaults.length > 0) {
      const resumed = this.subs.resumable()
      this.subs.hold(resumed)
      requests.push(this.subscribeFrame(this.subs.defaults).finally(() => this.show(this.subs.releaseUnacknowledged(resumed))))
    }
    const extra = this.subs.extra()
    if (extra.length > 0) requests.push(this.subscribeFrame(extra))
    return Promise.allSettled(requests)
  }

  private subscribeFrame (channels: string[]): Promise<unknown> {
    const since = this.subs.positions.since(channels)
    return this.request({ type: 'subscribe', payload: { channels, since } }, since)
  }

  private request (frame: { type: string, payload?: object }, since?: Record<string, Position>): Promise<unknown> {
    const id = `c${++this.seq}`
    if (this.current === null || !this.current.send({ ...frame, id })) return Promise.resolve(undefined)
    return new Promise((resolve, reject) => { this.pending.set(id, { resolve, reject, since }) })
  }

  /** SSE streams have a fixed channel list: reopen with the new one, resuming the rest. */
  private reopenStream (): Promise<void> {
    const waiter = new Promise<void>((resolve) => this.reopenWaiters.push(resolve))
    clearTimeout(this.timer)
    this.current?.close()
    this.dropConnection()
    this.nextKind = 'sse'
    void this.attempt()
    return waiter
  }

  /** A transport ended on its own (or failed to connect): pick the next one and schedule it. */
  private closed (transport: Transport | null, info: TransportClosed): void {
    const kind = transport?.kind ?? this.nextKind
    const wasOpen = this.greeted
    clearTimeout(this.timer)
    this.dropConnection()
    if (this.state === 'closed') return
    if (info.code === TOKEN_EXPIRED) this.emit('error', { code: 'token_expired', message: 'the token expired: refreshToken() or a token function keeps the connection' })
    if (info.status === 401 || info.status === 403) {
      this.emit('error', { code: info.status === 401 ? 'unauthorized' : 'forbidden', status: info.status, message: info.reason })
    }
    const next = this.policy.next(kind, wasOpen, transport !== null)
    this.nextKind = next.kind
    const reason = info.reason !== '' ? info.reason : wasOpen ? `closed (${info.code ?? 'stream ended'})` : 'could not connect'
    this.setState('reconnecting', { attempt: next.attempt, delayMs: next.delayMs, reason, transport: next.kind })
    this.timer = setTimeout(() => { void this.attempt() }, next.delayMs)
  }

  /** Forgets the live connection; requests in flight settle (they are re-applied on reconnect). */
  private dropConnection (): void {
    this.current = null
    this.greeted = false
    this.subs.reset()
    for (const p of this.pending.values()) p.resolve(undefined)
    this.pending.clear()
  }

  private streamUrl (): string {
    const channels = [...this.subs.desired].join(',')
    return channels === '' ? this.sseUrl : withQuery(this.sseUrl, 'channels', channels)
  }

  private setState (state: ConnectionState, extra: Partial<StateChange> = {}): void {
    this.state = state
    this.emit('state', { state, transport: this.transport, ...extra })
  }

  private emit (type: string, value: unknown): void {
    this.emitter.emit(type, value)
  }
}

const list = (channels: string | string[]): string[] => typeof channels === 'string' ? [channels] : [...channels]

function withQuery (url: string, name: string, value: string | undefined): string {
  if (value === undefined || value === '') return url
  return `${url}${url.includes('?') ? '&' : '?'}${name}=${encodeURIComponent(value)}`
}

/** The promise as is, marked handled so an app that ignores it gets no unhandled rejection. */
function quiet<T> (promise: Promise<T>): Promise<T> {
  promise.catch(() => {})
  return promise
}
