/**
 * The gateway's browser client, served as /client.js (ES module, no dependencies; also
 * runs in Node 20 for tests, given the `ws` package as `WebSocket`).
 *
 *   import { connect } from '/client.js'
 *   const rt = connect({ token, channels: ['product:7'], rewind: 1 })  // with its current state
 *   rt.on('inventory:updated', (e) => render(e.payload))   // or '*' for every event
 *   rt.on('state', ({ state }) => badge(state))   // connecting | open | reconnecting | closed
 *   rt.on('recovery', ({ channels }) => reload(channels))  // history gone or stream reset: reload
 *   rt.on('presence', ({ channel, connections }) => viewers(connections))
 *
 * WebSocket first, Server-Sent Events when a WebSocket cannot connect (a proxy that
 * refuses the upgrade): same events, same API. Reconnects with exponential backoff and
 * jitter and resumes every channel from the last position it saw (`since` over
 * WebSocket, a Last-Event-ID cursor over SSE).
 *
 * Client events: `state` (StateChange), `open` ({transport, connectionId, userId,
 * channels, resumed}: live on every channel), `recovery` ({recovered: false, channels,
 * reset?, gap?}: a resume the history no longer covers, a `system:reset` of a channel, or
 * offsets skipped with nothing said),
 * `presence` ({channel, connections, users}), `disconnected` ({code: 4003, reason,
 * willReconnect}: an admin or service disconnected it or revoked its token; it comes back
 * only with a new token from its token function, else the state goes to `closed`),
 * `error` (server `error` frames; `unauthorized`/`forbidden` refusals over SSE;
 * `token_expired` on close 4001).
 *
 * Size as built by `npm run build` (dist/client, comments stripped, not minified): the
 * eight modules a browser loads come to about 43 KB, 9.9 KB gzipped.
 */
import { Emitter, type Handler } from './emitter.js'
import { getJson, type HistoryOptions, type HistoryPage, historyUrl, type PresenceCounts, presenceUrl, rewindPage } from './http-api.js'
import type { ConnectionState, ConnectOptions, RealtimeEvent, StateChange, SubscribeOptions } from './options.js'
import type { Position } from './positions.js'
import { backoffDelay, ReconnectPolicy } from './reconnect-policy.js'
import { openEventStream } from './sse-transport.js'
import { Subscriptions } from './subscriptions.js'
import type { ServerFrame, Transport, TransportClosed, TransportKind } from './transport.js'
import { openWebSocket, type WebSocketConstructor } from './ws-transport.js'

export type { BackoffOptions, ConnectionState, ConnectOptions, RealtimeEvent, StateChange, SubscribeOptions } from './options.js'
export type { HistoryOptions, HistoryPage, HttpError, PresenceCounts } from './http-api.js'
export type { Position } from './positions.js'
export type { TransportKind } from './transport.js'
export type { WebSocketConstructor, WebSocketLike } from './ws-transport.js'

interface Pending { resolve(value: any): void, reject(err: Error): void, since?: Record<string, Position> }

/** A subscribe (or other change) over SSE waiting for the reopened stream; `channels`: what it added. */
interface ReopenWaiter { resolve(): void, reject(err: Error): void, channels: readonly string[] }

/** WebSocket close codes (docs/protocol.md, WebSocket): an expired token; disconnected or revoked. */
const TOKEN_EXPIRED = 4001
const DISCONNECTED = 4003

/** Client-side events; a channel event with one of these types reaches only '*' handlers. */
const LIFECYCLE = new Set(['state', 'open', 'recovery', 'error', 'presence', 'disconnected'])

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
  private readonly reopenWaiters: ReopenWaiter[] = []
  private current: Transport | null = null
  private greeted = false
  private everOpened = false
  private nextKind: TransportKind
  private readonly policy: ReconnectPolicy
  private seq = 0
  private timer: ReturnType<typeof setTimeout> | undefined
  private token: ConnectOptions['token']
  /** The token the current (or last) connection was opened with. */
  private usedToken: string | undefined
  /** After a 4003 or a 401: the token that must not be used again (docs/protocol.md, Disconnect and revoke). */
  private refusedToken: string | undefined | null = null
  /** Why it was refused, for the reason `closed` gives when no new token comes. */
  private refusedBy: 'disconnected' | 'unauthorized' | 'token expired' = 'disconnected'
  /** Events of channels rewound over SSE, read from the history route, not shown yet (prepareRewinds). */
  private readonly rewound = new Map<string, RealtimeEvent[]>()
  /** A token handed to refreshToken() that the gateway has not answered yet (WebSocket `auth:refresh`). */
  private refreshing: string | null = null
  /** Counts the app's subscribes and unsubscribes: an SSE stream's greeting tells by it whether they changed since its request left. */
  private subsChanges = 0
  /** subsChanges when the current SSE stream's request left. */
  private streamAsked = 0
  /** The cursor the current SSE stream resumed from (its Last-Event-ID). */
  private streamFrom: string | undefined
  /** The latest counts each presence channel reported (what presence() answers over SSE). */
  private readonly presenceSeen = new Map<string, PresenceCounts>()
  private readonly WebSocketImpl: WebSocketConstructor | undefined
  private readonly wsUrl: string
  private readonly sseUrl: string
  private readonly httpUrl: string
  private readonly fetchImpl: typeof fetch

  constructor (private readonly options: ConnectOptions) {
    const base = (options.url ?? (globalThis as any).location?.origin ?? '').replace(/\/+$/, '')
    if (base === '' && (options.wsUrl === undefined || options.sseUrl === undefined)) throw new Error('connect: url is required outside a browser')
    this.wsUrl = options.wsUrl ?? base.replace(/^http/, 'ws') + '/ws'
    this.sseUrl = options.sseUrl ?? base.replace(/^ws/, 'http') + '/sse'
    this.httpUrl = base !== '' ? base.replace(/^ws/, 'http') : this.sseUrl.replace(/\/sse$/, '')
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis)
    this.WebSocketImpl = options.WebSocket ?? (globalThis as any).WebSocket
    const transports = (options.transports ?? ['ws', 'sse']).filter((k) => k !== 'ws' || this.WebSocketImpl !== undefined)
    if (transports.length === 0) throw new Error('connect: no usable transport (pass a WebSocket implementation or allow sse)')
    this.policy = new ReconnectPolicy(transports, options.backoff)
    this.nextKind = transports[0]
    this.token = options.token
    this.subs = new Subscriptions([])
    if (options.rewind !== undefined && !validRewind(options.rewind)) throw new Error(`connect: ${badRewind(options.rewind).message}`)
    const { valid, invalid } = byName(options.channels ?? [])
    this.subs.add(valid, options.rewind)
    // Started on the next tick, so handlers the app adds right after connect() see everything.
    this.timer = setTimeout(() => {
      if (invalid.length > 0) this.emit('error', badNames(invalid))
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

  /**
   * Adds channels; settles once the server acknowledged (or at once while disconnected).
   * `rewind: n` starts each new channel with its last n events (`rewind: 1`: its current
   * state), then live, with no gap at the seam; a reconnect resumes from where it stood.
   */
  subscribe (channels: string | string[], options: SubscribeOptions = {}): Promise<void> {
    // A malformed name is refused here, alone: sent, it would be a 400 for the whole SSE
    // stream, every channel dark (docs/protocol.md, Channels).
    if (options.rewind !== undefined && !validRewind(options.rewind)) return quiet(Promise.reject(badRewind(options.rewind)))
    const { valid, invalid } = byName(list(channels))
    const fresh = this.subs.add(valid, options.rewind)
    const added = this.added(fresh)
    // Known at once: rejected at once (the good names still go on, their refusals told as 'error').
    if (invalid.length > 0) {
      void quiet(added)
      return quiet(Promise.reject(badNames(invalid)))
    }
    return quiet(added)
  }

  /**
   * Puts channels just added on the connection: over WebSocket a subscribe (the greeting's
   * resubscribe takes them before it), over SSE a stream with them. Settles at once while
   * disconnected: the next connection takes them.
   */
  private added (fresh: string[]): Promise<void> {
    if (fresh.length === 0) return Promise.resolve()
    this.subsChanges++
    if (this.current === null) return Promise.resolve()
    if (this.current.kind === 'sse') return this.greeted ? this.reopenStream(fresh) : this.nextStream(fresh)
    return this.greeted ? Promise.all(this.subscribeFrames(fresh)).then(() => undefined) : Promise.resolve()
  }

  /**
   * The channel's live counts, `{channel, connections, users}`. Over WebSocket it asks
   * (`presence:get`; rejected with the server's `forbidden`); over SSE, which cannot ask,
   * it is the latest `presence` the stream delivered for the channel (sent on subscribe
   * and on every change), else `GET /realtime/presence/<channel>` (admins and services).
   */
  async presence (channel: string): Promise<PresenceCounts> {
    if (this.greeted && this.current?.kind === 'ws') {
      const answer = await quiet(this.request({ type: 'presence:get', payload: { channel } }))
      if (answer !== undefined) return answer as PresenceCounts
    }
    const seen = this.presenceSeen.get(channel)
    if (seen !== undefined) return { ...seen }
    return await getJson(this.fetchImpl, presenceUrl(this.httpUrl, channel), await this.currentToken())
  }

  /**
   * A channel's history over HTTP (`GET /realtime/history/<channel>`): with `since`, the
   * events after it (`recovered: false` and none when the history no longer holds them);
   * without, the last `limit`. Oldest first. Rejects with an HttpError (`status`, `code`).
   */
  async history (channel: string, options: HistoryOptions = {}): Promise<HistoryPage> {
    return await getJson(this.fetchImpl, historyUrl(this.httpUrl, channel, options), await this.currentToken())
  }

  unsubscribe (channels: string | string[]): Promise<void> {
    const gone = this.subs.remove(list(channels))
    if (gone.length > 0) this.subsChanges++
    for (const c of gone) {
      this.presenceSeen.delete(c)
      this.rewound.delete(c)
    }
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
      // A stream cannot be asked: what the gateway would refuse (auth:refresh's rules) is
      // refused here, keeping the stream and its token, instead of reopening as another user
      // or with a token refused at once (audit).
      const refused = refreshRefusal(token, this.userId)
      if (refused !== undefined) return quiet(Promise.reject(Object.assign(new Error(refused), { code: 'forbidden' })))
      this.token = token
      return this.reopenStream()
    }
    this.refreshing = token
    return quiet(this.request({ type: 'auth:refresh', payload: { token } })
      .then(() => { this.token = token })
      .finally(() => { if (this.refreshing === token) this.refreshing = null }))
  }

  /** The last position seen in every channel (what a reconnect resumes from). */
  lastPositions (): Record<string, Position> {
    return this.subs.positions.snapshot()
  }

  close (): void {
    this.shutDown()
  }

  private shutDown (reason?: string): void {
    if (this.state === 'closed') return
    clearTimeout(this.timer)
    this.current?.close()
    this.dropConnection()
    for (const waiter of this.reopenWaiters.splice(0)) waiter.resolve()
    this.setState('closed', reason === undefined ? {} : { reason })
  }

  private async currentToken (): Promise<string | undefined> {
    return typeof this.token === 'function' ? await this.token() : this.token
  }

  private async attempt (): Promise<void> {
    this.timer = undefined
    const kind = this.nextKind
    let token: string | undefined
    try {
      token = await this.currentToken()
    } catch (err) {
      const reason = `token: ${err instanceof Error ? err.message : String(err)}`
      if (this.refusedToken !== null) return this.shutDown(`${this.refusedBy}; no new token (${reason})`)
      return this.closed(null, { reason })
    }
    if (this.refusedToken !== null) {
      // docs/protocol.md, close 4003: never again with the token that was disconnected.
      if (token === undefined || token === '' || token === this.refusedToken) return this.shutDown(`${this.refusedBy}; no new token`)
      this.refusedToken = null
    }
    if (kind === 'sse') {
      // Again while the app subscribed meanwhile: a channel it added with a rewind is read too.
      let changes
      do {
        changes = this.subsChanges
        await this.prepareRewinds(token)
      } while (changes !== this.subsChanges && this.state !== 'closed')
    }
    if (this.state === 'closed' || this.current !== null) return
    this.usedToken = token
    const events = {
      frame: (frame: ServerFrame) => { if (this.current === transport) this.onFrame(frame) },
      closed: (info: TransportClosed) => { if (this.current === transport) this.closed(transport, info) }
    }
    this.streamAsked = this.subsChanges
    this.streamFrom = kind === 'sse' ? this.subs.positions.cursor(this.subs.all()) : undefined
    const transport: Transport = kind === 'ws'
      ? openWebSocket(withQuery(this.wsUrl, 'token', token), this.WebSocketImpl as WebSocketConstructor, events)
      : openEventStream(this.streamUrl(), {
        fetch: this.fetchImpl,
        token,
        lastEventId: this.streamFrom,
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
    if (frame.type === 'system:connected' && this.current?.kind === 'sse' && this.streamAsked !== this.subsChanges) {
      // subscribe() or unsubscribe() while this stream's request was under way: its channel
      // list is the one from before (audit: a channel subscribed then stayed dark, one
      // unsubscribed stayed on). It opens again with the list asked for now, from the
      // positions held before this stream (its greeting's cursor is not read: a resume that
      // lost something says so after the greeting, on the stream that is dropped here).
      // 'open' waits for that stream.
      void quiet(this.reopenStream())
      return
    }
    // A reset is weighed against where the client stood before it (its SSE id is already the new position).
    if (frame.type === 'system:reset') this.onReset(frame)
    // An event is what carries an offset, whatever its type: a service may publish one of type
    // `presence` (only `system:` is reserved), and it must not be taken for the live counts.
    // Its cursor is read once the event is weighed against where the channel stood (a gap).
    if (frame.channel !== undefined && typeof frame.offset === 'number') return this.onEvent(frame as RealtimeEvent, frame.cursor)
    if (frame.cursor !== undefined) this.subs.positions.readCursor(frame.cursor)
    if (frame.type === 'system:reset') return
    if (frame.type === 'presence') return this.onPresence(frame)
    if (frame.channel !== undefined) return this.onEvent(frame as RealtimeEvent)
    const pending = frame.id === undefined ? undefined : this.pending.get(String(frame.id))
    if (pending !== undefined) this.pending.delete(String(frame.id))
    switch (frame.type) {
      case 'system:connected':
        return this.onGreeting(frame.payload)
      case 'system:recovery': {
        // It names no channel. Those not recovered are the ones the greeting's cursor moved off
        // the position the stream resumed from (docs/protocol.md); every one when none did.
        const moved = this.streamFrom === undefined ? [] : this.subs.positions.movedFrom(this.streamFrom)
        return this.emit('recovery', { recovered: false, channels: moved.length > 0 ? moved : this.subs.all() })
      }
      case 'system:disconnect': {
        // SSE's 4003: the stream ends right after it.
        const transport = this.current
        transport?.close()
        return this.closed(transport, { code: frame.payload?.code ?? DISCONNECTED, reason: frame.payload?.reason ?? 'disconnected' })
      }
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
    const counts = { channel: frame.channel as string, connections: frame.payload?.connections, users: frame.payload?.users }
    this.presenceSeen.set(counts.channel, counts)
    const pending = frame.id === undefined ? undefined : this.pending.get(String(frame.id))
    if (pending !== undefined) {
      this.pending.delete(String(frame.id))
      pending.resolve(counts)
    }
    this.emit('presence', counts)
  }

  /**
   * The channel's stream restarted: its offsets count on from the position given; the app
   * reloads it. Unless nothing was lost (a reset to where the client stands, as the seam of a
   * resume: Subscriptions.resetTo), which the app never sees.
   */
  private onReset (frame: ServerFrame): void {
    const channel = frame.channel as string
    const position = frame.payload?.position
    if (position !== undefined && this.subs.resetTo(channel, position)) return
    this.emit('recovery', { recovered: false, channels: [channel], reset: true })
  }

  /** An event, and over SSE the cursor that came with it (the stream's position after it). */
  private onEvent (event: RealtimeEvent, cursor?: string): void {
    const copy = { type: event.type, channel: event.channel, offset: event.offset, payload: event.payload, ts: event.ts }
    const shown = this.subs.accept(copy)
    if (cursor !== undefined) this.subs.positions.readCursor(cursor)
    this.show(shown)
  }

  /**
   * Shows events; a gap before them (Subscriptions.takeGaps: offsets skipped with nothing
   * said) is a `recovery` first, so the app reloads the channel rather than miss it silently.
   */
  private show (events: readonly RealtimeEvent[]): void {
    for (const [channel, gap] of this.subs.takeGaps()) this.emit('recovery', { recovered: false, channels: [channel], gap })
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
    // Before anything this connection sends: its replays and live events come after them.
    this.showRewound()
    // 'open' means live on every channel: over WebSocket, once the subscriptions are acknowledged.
    const transport = this.current
    const subscribed = kind === 'ws' ? this.resubscribe() : Promise.resolve()
    void subscribed.then(() => {
      if (this.current !== transport) return
      this.setState('open')
      this.emit('open', { transport: kind, connectionId: payload.connectionId, userId: payload.userId, channels: this.subs.all(), resumed })
      for (const waiter of this.reopenWaiters.splice(0)) waiter.resolve()
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
      // Its held events go out once the resume is taken (or refused for good), however many
      // times it is asked again; 'open' waits for its first answer only (review: a resume
      // answered `internal` all through a Redis outage held 'open' as long).
      requests.push(new Promise<void>((resolve) => {
        this.subscribeRetrying(() => this.subs.defaults, undefined, resolve)
          .finally(() => this.show(this.subs.releaseUnacknowledged(resumed)))
          .then(() => resolve(), () => resolve())
      }))
    }
    // 'open' waits for their first answers: one refused as rate_limited or internal is asked
    // again meanwhile (subscribeRetrying), and one that never fits must not hold 'open' for ever.
    const extra = this.subs.extra()
    if (extra.length > 0) requests.push(...this.subscribeFrames(extra, true))
    return Promise.allSettled(requests)
  }

  /** One subscribe per rewind asked for (a frame carries one); channels with a position resume (`since`). */
  private subscribeFrames (channels: string[], firstAnswers = false): Array<Promise<unknown>> {
    const groups = new Map<number | undefined, string[]>()
    for (const channel of channels) {
      const rewind = this.subs.rewindOf(channel)
      groups.set(rewind, [...groups.get(rewind) ?? [], channel])
    }
    return [...groups].map(async ([rewind, group]) => {
      if (!firstAnswers) return await this.subscribeGroup(group, rewind)
      // Settles when the group is taken or refused, or at its first rate_limited: its retries go on.
      await new Promise<void>((resolve) => { this.subscribeGroup(group, rewind, resolve).then(resolve, resolve) })
    })
  }

  /**
   * One subscribe frame. The server refuses a frame whole when one channel in it may not be
   * read, naming up to five of them: those are dropped (they would be refused at every
   * reconnect) and the rest asked again in one frame, until it is taken. A refusal naming
   * none of them (a malformed name, too many channels) drops the whole group. Rejects with
   * the first refusal. One frame at a time: asking channel by channel could run into the
   * inbound rate limit and close the connection (1008).
   */
  private async subscribeGroup (group: string[], rewind: number | undefined, answered?: () => void): Promise<void> {
    let rest = group
    let refused: unknown
    while (rest.length > 0) {
      try {
        await this.subscribeRetrying(() => rest.filter((c) => this.subs.desired.has(c)), rewind, answered)
        break
      } catch (err) {
        if (!refusal(err)) throw err
        refused ??= err
        const named = refusedChannels((err as Error).message).filter((c) => rest.includes(c))
        const dropped = named.length > 0 ? named : rest
        this.subs.remove(dropped)
        rest = rest.filter((c) => !dropped.includes(c))
      }
    }
    if (refused !== undefined) throw refused
  }

  /**
   * SSE: `?rewind=` is ignored on a stream that resumes (and applies to every channel), so
   * a channel to rewind has its last n events read from the history route (rewindPage) and
   * the stream resumes it from where they end; they are shown when the next connection
   * greets, before anything it sends. Should the read fail, the channel starts live (or, one
   * it may not read, is refused by the stream, which says so).
   */
  private async prepareRewinds (token: string | undefined): Promise<void> {
    // Within the connect timeout: a read that hangs left the client connecting for good.
    const signal = timeoutSignal(this.options.connectTimeoutMs ?? 10_000)
    await Promise.all([...this.subs.desired].map(async (channel) => {
      // Read already for this connection (asking would drop its rewind, needed should the attempt fail).
      if (this.rewound.has(channel)) return
      const limit = this.subs.rewindOf(channel)
      if (limit === undefined) return
      const page = await rewindPage(this.fetchImpl, this.httpUrl, channel, limit, token, signal).catch(() => undefined)
      if (page === undefined || !this.subs.desired.has(channel)) return
      this.subs.positions.set(channel, page.position)
      this.rewound.set(channel, page.events)
    }))
  }

  /**
   * A connection that never greeted: what was read for its rewinds is not shown, and those
   * channels go back to having no position, so the next attempt reads them again (a stale
   * read, resumed from later, could be out of a short history by then).
   */
  private dropRewound (): void {
    for (const channel of this.rewound.keys()) this.subs.positions.forget(channel)
    this.rewound.clear()
  }

  /** The rewound events read for channels still subscribed, shown once (a connection just greeted). */
  private showRewound (): void {
    for (const [channel, events] of this.rewound) if (this.subs.desired.has(channel)) this.show(events)
    this.rewound.clear()
  }

  /**
   * A subscribe of `channels()` (asked each time: those still wanted), with their positions.
   * Refused as `rate_limited` (the user's subscribe or history budget, or the instance's room
   * for replays: "try again in a moment") or failed as `internal` (the gateway's Redis
   * unreachable), it is sent again after a pause, growing as the reconnect backoff does,
   * while the connection it went on is still the current one (a next connection
   * resubscribes everything). Left refused, the channel stayed dark until the next
   * reconnect, and a resume's gap with it; the app's own retry sent nothing, the channel
   * being wanted already (audit in Chromium, session 28). Other refusals reject.
   */
  private async subscribeRetrying (channels: () => string[], rewind?: number, answered?: () => void): Promise<unknown> {
    const transport = this.current
    for (let attempt = 1; ; attempt++) {
      const names = channels()
      if (names.length === 0) return undefined
      const since = this.subs.positions.since(names)
      try {
        return await this.request({ type: 'subscribe', payload: { channels: names, since, rewind } }, since)
      } catch (err) {
        if (!passing(err)) throw err
        answered?.()
        await pause(backoffDelay(this.options.backoff, attempt))
        if (this.current !== transport || transport === null) return undefined
      }
    }
  }

  private request (frame: { type: string, payload?: object }, since?: Record<string, Position>): Promise<unknown> {
    const id = `c${++this.seq}`
    if (this.current === null || !this.current.send({ ...frame, id })) return Promise.resolve(undefined)
    return new Promise((resolve, reject) => { this.pending.set(id, { resolve, reject, since }) })
  }

  /**
   * Settles with the next SSE stream that opens, rejected should it refuse these channels
   * (403, 400): a subscribe that reopens the stream, or one made while a stream is being
   * opened (which reopens with the new list when it greets, onFrame), is charged with its
   * own channels' refusals, not the whole client.
   */
  private nextStream (channels: readonly string[]): Promise<void> {
    return new Promise<void>((resolve, reject) => this.reopenWaiters.push({ resolve, reject, channels }))
  }

  /** SSE streams have a fixed channel list: reopen with the new one, resuming the rest. */
  private reopenStream (channels: readonly string[] = []): Promise<void> {
    const waiter = this.nextStream(channels)
    clearTimeout(this.timer)
    if (this.greeted) this.policy.reopened()
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
    if (!wasOpen) this.dropRewound()
    if (this.refreshing !== null) {
      // A refreshToken() under way when the connection ended (say, just as the old token
      // expired): its token was never refused, so the next connection uses it.
      this.token = this.refreshing
      this.refreshing = null
    }
    // A fixed token the app replaced since this connection opened is a new one to try.
    const renewed = typeof this.token === 'string' && this.token !== this.usedToken
    clearTimeout(this.timer)
    this.dropConnection()
    if (this.state === 'closed') return
    if (info.code === TOKEN_EXPIRED) {
      // The gateway said so (WebSocket 4001, SSE system:disconnect 4001): that token can only be
      // refused from now on (over WebSocket a browser would not even see the 401 at connect).
      this.emit('error', { code: 'token_expired', message: 'the token expired: refreshToken() or a token function keeps the connection' })
      if (this.refused('token expired', renewed, 'token expired')) return
    }
    if (info.code === DISCONNECTED) {
      const willReconnect = typeof this.token === 'function'
      this.emit('disconnected', { code: DISCONNECTED, reason: info.reason, willReconnect })
      if (!willReconnect) return this.shutDown(`disconnected: ${info.reason}`)
      this.refusedToken = this.usedToken ?? ''
      this.refusedBy = 'disconnected'
    }
    if (info.status === 401 || info.status === 403) {
      this.emit('error', { code: info.status === 401 ? 'unauthorized' : 'forbidden', status: info.status, message: info.reason })
    }
    if (info.status === 401) {
      // The token was refused (expired, revoked, not valid): never again with it
      // (docs/protocol.md, Server-Sent Events: so EventSource stops retrying). A token
      // function may give a new one; a fixed token cannot change.
      if (this.refused('unauthorized', renewed, `unauthorized: ${info.reason}`)) return
    }
    if (info.status === 403) this.dropRefused(info.reason)
    if (info.status === 400 && GATEWAY_BAD_REQUEST.test(info.reason) && this.dropRequested(info.reason)) return
    // A close code from the gateway itself (1013: a limit) means WebSocket got through; 1006 may be a proxy.
    const answered = info.code !== undefined && info.code !== 1006 && info.code !== 4000
    const next = this.policy.next(kind, wasOpen, transport !== null, answered)
    this.nextKind = next.kind
    const reason = info.reason !== '' ? info.reason : wasOpen ? `closed (${info.code ?? 'stream ended'})` : 'could not connect'
    this.setState('reconnecting', { attempt: next.attempt, delayMs: next.delayMs, reason, transport: next.kind })
    this.timer = setTimeout(() => { void this.attempt() }, next.delayMs)
  }

  /**
   * The token the connection used was refused (expired, revoked): never again. A token
   * function must give a new one; a fixed token stops the client, unless the app handed a new
   * one since (`renewed`). Returns true when the client stopped.
   */
  private refused (by: 'token expired' | 'unauthorized', renewed: boolean, reason: string): boolean {
    if (typeof this.token === 'function') {
      this.refusedToken = this.usedToken ?? ''
      this.refusedBy = by
      return false
    }
    if (renewed) return false
    this.shutDown(reason)
    return true
  }

  /**
   * An SSE stream refused (403) for channels it may not read, named in the refusal ("not
   * allowed to read a, b"): they are dropped, and each subscribe that asked for one is
   * rejected, so the stream opens again with the rest instead of being refused for ever.
   */
  private dropRefused (reason: string): void {
    const refused = this.subs.remove(refusedChannels(reason))
    if (refused.length === 0) return
    for (const c of refused) this.presenceSeen.delete(c)
    const error = Object.assign(new Error(reason), { code: 'forbidden', channels: refused })
    for (const waiter of this.reopenWaiters.splice(0)) {
      if (waiter.channels.some((c) => refused.includes(c))) waiter.reject(error)
      else this.reopenWaiters.push(waiter)
    }
  }

  /**
   * An SSE stream refused as malformed (400: a rewind out of range, more channels than the
   * gateway allows): asking again the same way is refused again. The channels of the
   * subscribes that reopened it are dropped and those subscribes rejected; with none, the
   * stream as configured can never open, and the client closes. Returns true when closed.
   */
  private dropRequested (reason: string): boolean {
    const waiters = this.reopenWaiters.splice(0)
    this.emit('error', { code: 'bad_request', status: 400, message: reason })
    const channels = waiters.flatMap((w) => w.channels)
    const error = Object.assign(new Error(reason), { code: 'bad_request', status: 400, channels })
    for (const waiter of waiters) waiter.reject(error)
    // Reopened for an unsubscribe or a new token, nothing added: nothing to drop either.
    if (channels.length === 0) {
      this.shutDown(`refused: ${reason}`)
      return true
    }
    this.subs.remove(channels)
    return false
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

/**
 * Why a token may not replace the current one over SSE (the rules auth:refresh applies over
 * WebSocket, as far as the client can read them; the signature is the gateway's to check):
 * not a JWT, another user's, or expired. Undefined when it may.
 */
function refreshRefusal (token: string, userId: string | null): string | undefined {
  let claims: { sub?: unknown, exp?: unknown }
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    claims = JSON.parse(atob(part.padEnd(part.length + (4 - part.length % 4) % 4, '=')))
  } catch {
    return 'not a token'
  }
  if (userId !== null && String(claims.sub) !== userId) return 'a refreshed token must be for the same user'
  if (typeof claims.exp === 'number' && claims.exp * 1000 <= Date.now()) return 'the token has expired'
  return undefined
}

/**
 * The channels a refusal names: `not allowed to subscribe to a, b` (a WebSocket error) or
 * `not allowed to read a, b` (an SSE 403), up to five of them; channel names hold no space
 * or comma (docs/protocol.md, Channels).
 */
function refusedChannels (message: string): string[] {
  return /not allowed to (?:subscribe to|read) (.+)$/.exec(message)?.[1].split(', ') ?? []
}

/**
 * The gateway's own SSE 400s for a request that asking again the same way cannot mend
 * (routes/sse.ts); any other 400 (a proxy's "header too large", say) is retried with backoff.
 */
const GATEWAY_BAD_REQUEST = /^(at most \d+ channels per connection|rewind must be|invalid channel name|channels: name)/

/** A channel name the gateway accepts: 1–200 of `[A-Za-z0-9_\-:.@]` (docs/protocol.md, Channels). */
const CHANNEL_NAME = /^[\w\-:.@]{1,200}$/

function byName (channels: readonly string[]): { valid: string[], invalid: string[] } {
  const valid: string[] = []
  const invalid: string[] = []
  for (const c of channels) (typeof c === 'string' && CHANNEL_NAME.test(c) ? valid : invalid).push(c)
  return { valid, invalid }
}

/** Aborts after `ms` (AbortSignal.timeout, where the runtime has it). */
function timeoutSignal (ms: number): AbortSignal | undefined {
  return typeof AbortSignal !== 'undefined' && typeof AbortSignal.timeout === 'function' ? AbortSignal.timeout(ms) : undefined
}

/** A rewind the gateway takes: a whole number of events, at least 1 (its upper bound is the gateway's history size). */
const validRewind = (rewind: unknown): boolean => typeof rewind === 'number' && Number.isInteger(rewind) && rewind >= 1

function badRewind (rewind: unknown): Error & { code: string } {
  return Object.assign(new Error(`rewind: must be an integer of at least 1 (got ${JSON.stringify(rewind)})`), { code: 'bad_request' })
}

function badNames (channels: string[]): Error & { code: string, channels: string[] } {
  const shown = channels.slice(0, 5).map((c) => JSON.stringify(String(c).slice(0, 40))).join(', ')
  return Object.assign(new Error(`not a channel name: ${shown}`), { code: 'bad_request', channels })
}

/** A subscribe refusal that passes: asked again on the same connection (subscribeRetrying). */
const passing = (err: unknown): boolean => ['rate_limited', 'internal'].includes((err as { code?: string })?.code ?? '')
/** A server `error` answer that refuses the request itself (not a lost connection, not a rate limit). */
const refusal = (err: unknown): boolean => ['forbidden', 'bad_request', 'too_many_channels'].includes((err as { code?: string })?.code ?? '')

function withQuery (url: string, name: string, value: string | undefined): string {
  if (value === undefined || value === '') return url
  return `${url}${url.includes('?') ? '&' : '?'}${name}=${encodeURIComponent(value)}`
}

/** Resolves after `ms`; in Node the timer does not keep the process alive. */
function pause (ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms) as { unref?: () => void }
    timer.unref?.()
  })
}

/** The promise as is, marked handled so an app that ignores it gets no unhandled rejection. */
function quiet<T> (promise: Promise<T>): Promise<T> {
  promise.catch(() => {})
  return promise
}
