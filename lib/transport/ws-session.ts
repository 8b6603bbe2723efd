import type { WebSocket } from 'ws'
import { BrokerUnavailableError, type SincePosition } from '../broker/broker.js'
import { ADMIN_CHANNEL, canSubscribe, defaultChannels, ORDERS_CHANNEL } from '../auth/channels.js'
import { ClientError, CloseCode } from '../core/errors.js'
import { REPLAY_ROOM_TAKEN } from './replay-backlog.js'
import type { Expiries, Expiring } from '../auth/expiry.js'
import type { Hub } from '../hub/hub.js'
import { type Identity, isAdmin } from '../auth/identity.js'
import { type ClientFrame, FrameError, parseClientFrame, requestIdOf, serverFrame } from './protocol.js'
import { monotonicMs } from '../core/clock.js'
import type { QuietWarning } from '../core/quiet-warning.js'
import { chargeSubscribe, type NewChannelBudget, NEW_CHANNELS_REFUSED, refundSubscribe, type UserBudget } from './user-budget.js'
import { budgetKeyOf, type HistoryReadBudget, HISTORY_READ_REFUSED } from './history-read-budget.js'
import { takeToken, type TokenBucket } from './token-bucket.js'
import { WsConnection, type WsConnectionOptions } from './ws-connection.js'

export interface SessionLogger {
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
}

/** Shared by every session of a server: the connection options and what the protocol needs. */
export interface WsSessionDeps extends WsConnectionOptions {
  hub: Hub
  /** The app's token expiries (plugins/auth.ts): a session watches its own token's `exp`. */
  expiries: Expiries
  /** Verifies a token and returns who it names; throws when invalid or expired. */
  verifyToken(token: string): Identity
  /** The stats of GET /realtime/stats. */
  stats(): Promise<unknown>
  /** The largest `rewind` a subscribe may ask: the largest history any channel keeps. */
  maxRewind: number
  log: SessionLogger
  rateLimit: { perSecond: number, burst: number, strikes: number }
  /** Channels a user may subscribe to per second, across its connections (lib/transport/user-budget.ts). */
  subscribeBudget?: UserBudget
  /** Channels this instance takes on for all users together, each user within its share (lib/transport/user-budget.ts, "New channels"). */
  newChannelBudget?: NewChannelBudget
  /** Bytes of frames a user may send per second (lib/transport/user-budget.ts). */
  inboundBudget?: UserBudget
  /** History read from the store per user (lib/transport/history-read-budget.ts). */
  historyReadBudget?: HistoryReadBudget
  /** The instance's warning that a frame failed because the broker is away: at most one line per interval. */
  brokerDownWarning?: QuietWarning
  onFrame?: (type: string) => void
  onRateLimited?: () => void
}

export type Admission = 'ok' | 'limited' | 'flooding'

/** An empty frame queue: one settled promise shared by every idle session. */
const IDLE: Promise<void> = Promise.resolve()

/**
 * How much a connection's frames may wait to be handled (their text, plus a frame's own
 * weight) before its socket is no longer read: frames under the rate limit can still come
 * faster than slow work (a subscribe to many channels new to a Redis instance) is done, and
 * the wait was unbounded. Once paused, TCP holds the client back; reading resumes when half
 * of it is done. A frame weighs at least QUEUED_FRAME_WEIGHT, so at most 256 wait.
 */
export const MAX_QUEUED_WEIGHT = 1024 * 1024
const QUEUED_FRAME_WEIGHT = 4096
/** A refused frame larger than this is answered without its id (not parsed at all). */
const MAX_PARSED_REFUSED_BYTES = 4096

/**
 * How long a new connection's own channels hold their live events for its first frame, a
 * resume (holdOwnChannels): a slow mobile link's round trip with room to spare (one slower
 * to resume gets the `system:reset` it got before), and the longest an event of a
 * connection that sends nothing waits after its greeting. It was 250 ms: a client 400 ms
 * away was sent live events past its gap before its resume arrived, and one that dropped
 * before the reset that followed resumed from past the gap for good (audit, session 29).
 */
export const OWN_CHANNELS_HOLD_MS = 1000

/** A second with no refused frame clears a connection's strikes: a burst that backed off is forgiven. */
const STRIKES_FORGIVEN_AFTER_MS = 1000

/**
 * The protocol of one WebSocket connection (docs/protocol.md, WebSocket): it parses client frames,
 * applies the channel rules and the inbound rate limit, and answers. Errors become
 * `error` frames; only flooding, expiry and transport limits close the connection.
 *
 * It is the connection itself, extended (the route hangs it on the socket and the hub
 * holds it): one object per socket, with the protocol's state as plain fields (the rate
 * limit's bucket, the frame queue, the expiry entry). Two objects and the pointers between
 * them were a tenth of the gateway's own idle memory per connection.
 */
export class WsSession extends WsConnection<WsSessionDeps> implements Expiring, TokenBucket {
  milliTokens: number
  updatedMs = monotonicMs()
  private strikes = 0
  /** When the last frame was refused (monotonicMs): strikes count refusals with no quiet second between them. */
  private lastStrikeMs = 0
  /** Frames still to handle, in arrival order, behind the greeting. */
  private queue = IDLE
  /** What the queue holds, weighed (MAX_QUEUED_WEIGHT). */
  private queuedWeight = 0

  private get deps (): WsSessionDeps {
    return this.options
  }

  constructor (id: string, identity: Identity, socket: WebSocket, deps: WsSessionDeps) {
    super(id, identity, socket, deps)
    this.milliTokens = deps.rateLimit.burst * 1000
    this.deps.expiries.watch(identity.exp, this)
  }

  /**
   * The inbound rate limit, judged as a frame of `bytes` arrives (before it is queued behind
   * earlier frames, before it is parsed): the connection's frame rate, then its user's bytes
   * across connections. `limited` frames get a `rate_limited` error; once a client has kept
   * flooding through WS_RATE_LIMIT_STRIKES refusals, with no second free of refusals between
   * them, it is `flooding`. (Refusals in a row, reset by any accepted frame, let a client
   * flood for ever at ten times the rate: the bucket lets a frame through every 20 ms.)
   */
  admit (bytes = 0): Admission {
    const inbound = this.deps.inboundBudget
    if (takeToken(this, this.deps.rateLimit.perSecond, this.deps.rateLimit.burst) && (bytes === 0 || inbound === undefined || inbound.take(this.budgetKey, bytes))) {
      return 'ok'
    }
    const now = monotonicMs()
    if (now - this.lastStrikeMs > STRIKES_FORGIVEN_AFTER_MS) this.strikes = 0
    this.lastStrikeMs = now
    this.strikes++
    this.deps.onRateLimited?.()
    return this.strikes > this.deps.rateLimit.strikes ? 'flooding' : 'limited'
  }

  /**
   * Holds every frame until `work` (the greeting: the connection's own subscriptions) is
   * done; then frames run one after another, so a subscribe's replay finishes before the
   * next frame (say, an unsubscribe) is looked at. `work` must not reject.
   */
  holdFramesUntil (work: Promise<void>): void {
    this.setQueue(work)
  }

  /**
   * Handles a frame after every earlier one, with the verdict `admit` gave it on arrival. A
   * refused frame keeps nothing of its text: its `rate_limited` answer names only its id.
   */
  receive (text: string, admission: Admission): void {
    if (admission === 'ok') {
      this.enqueue(text.length, async () => { await this.process(text) })
    } else if (admission === 'limited') {
      // Parsed for its id only when small: a refused frame must not cost what it was refused for.
      const id = text.length <= MAX_PARSED_REFUSED_BYTES ? requestIdOf(text) : undefined
      this.enqueue(0, async () => { this.send(serverFrame.error('rate_limited', 'too many frames; slow down', id)) })
    } else {
      this.enqueue(0, async () => { this.close(CloseCode.POLICY_VIOLATION, 'flooding') })
    }
  }

  /**
   * Queues `work` behind what is queued; past MAX_QUEUED_WEIGHT the socket is paused until
   * the queue is down to half. Work for a connection closed meanwhile is skipped: queued
   * behind a slow subscribe of a client that has gone since, the hub has forgotten the
   * connection, and there is no one to answer.
   */
  private enqueue (bytes: number, work: () => Promise<void>): void {
    const weight = Math.max(bytes, QUEUED_FRAME_WEIGHT)
    this.queuedWeight += weight
    if (this.queuedWeight > MAX_QUEUED_WEIGHT && !this.socket.isPaused) this.socket.pause()
    this.setQueue(this.queue.then(async () => {
      try {
        if (this.isOpen) await work()
      } finally {
        this.queuedWeight -= weight
        if (this.socket.isPaused && this.queuedWeight <= MAX_QUEUED_WEIGHT / 2) this.socket.resume()
      }
    }))
  }

  /** Keeps the queue's tail; once it has run, the shared IDLE again, not a settled promise per socket. */
  private setQueue (tail: Promise<void>): void {
    this.queue = tail
    void tail.then(() => { if (this.queue === tail) this.queue = IDLE })
  }

  /** Acts on an admitted frame; never throws. */
  private async process (text: string): Promise<void> {
    let frame: ClientFrame | undefined
    try {
      frame = parseClientFrame(text)
      this.deps.onFrame?.(frame.type)
      await this.dispatch(frame)
    } catch (err) {
      this.fail(err, frame?.id ?? (err instanceof FrameError ? err.id : undefined))
    }
    this.releaseOwnChannels()
  }

  /**
   * The greeting's subscribe kept the live events of the connection's own channels
   * (`user:<id>`, joined at the live edge) held (its replay(true)); they go once its first
   * frame has been handled, or OWN_CHANNELS_HOLD_MS after the greeting. A client resuming them
   * with `since` sends that first, right after `system:connected`: what it missed then comes
   * before what was held, in order (lib/hub/hub.ts, release).
   */
  holdOwnChannels (channels: readonly string[]): void {
    if (channels.length === 0) return
    // Behind any frame being handled, never in the middle of its subscribe.
    setTimeout(() => { this.enqueue(0, async () => { this.releaseOwnChannels() }) }, OWN_CHANNELS_HOLD_MS).unref()
  }

  /**
   * Between frames, only the greeting's hold can be left (a frame's subscribe has replayed
   * what it held by the time it is done): no field for it on every connection.
   */
  private releaseOwnChannels (): void {
    if (this.pendingEvents === null) return
    this.deps.hub.release(this, defaultChannels(this.identity))
  }

  /** Ends the session's own timers; the hub forgets the connection separately. */
  dispose (): void {
    this.deps.expiries.unwatch(this.identity.exp, this)
  }

  /** Closes with 4001: the token expired (and no refresh moved the expiry). */
  expire (): void {
    this.close(CloseCode.TOKEN_EXPIRED, 'token expired')
  }

  private async dispatch (frame: ClientFrame): Promise<void> {
    switch (frame.type) {
      case 'system:ping':
        return this.send(serverFrame.pong(frame.id))
      case 'subscribe': {
        const { channels, since } = frame.payload
        const rewind = frame.payload.rewind ?? frame.rewind
        if (frame.payload.rewind !== undefined && frame.rewind !== undefined && frame.payload.rewind !== frame.rewind) {
          throw new ClientError('bad_request', 'rewind is given twice, with two values')
        }
        if (rewind !== undefined && rewind > this.deps.maxRewind) {
          throw new ClientError('bad_request', `rewind must be an integer from 1 to ${this.deps.maxRewind}`)
        }
        return await this.subscribe(channels, frame.id, 'subscribed', since, rewind)
      }
      case 'unsubscribe':
        return this.unsubscribe(frame.payload.channels, frame.id, 'unsubscribed')
      case 'room:join':
        return await this.subscribe([frame.payload.room], frame.id, 'subscribed')
      case 'room:leave':
        return this.unsubscribe([frame.payload.room], frame.id, 'unsubscribed')
      case 'subscribe:admin':
        return await this.subscribe([ADMIN_CHANNEL], frame.id, 'subscribed')
      case 'subscribe:orders':
        // The user's own orders already reach user:<id>; admins get every order.
        if (isAdmin(this.identity)) return await this.subscribe([ORDERS_CHANNEL], frame.id, 'subscribed')
        return this.send(serverFrame.reply('subscribed', frame.id, {
          channels: this.identity.userId === null ? [] : [`user:${this.identity.userId}`],
          positions: {},
          recovered: {}
        }))
      case 'request:stats':
        if (!isAdmin(this.identity)) throw new ClientError('forbidden', 'stats need the admin role')
        return this.send(serverFrame.reply('stats', frame.id, await this.deps.stats()))
      case 'auth:refresh':
        return this.refresh(frame.payload.token, frame.id)
      case 'presence:get':
        return await this.presence(frame.payload.channel, frame.id)
    }
  }

  private async subscribe (
    channels: string[], id: string | number | undefined, replyType: string, since?: Record<string, SincePosition>, rewind?: number
  ): Promise<void> {
    // A name given twice is one channel: answered once, charged once (audit: 200 copies echoed).
    channels = distinct(channels)
    const forbidden = channels.filter((c) => !canSubscribe(this.identity, c))
    if (forbidden.length > 0) {
      throw new ClientError('forbidden', `not allowed to subscribe to ${forbidden.slice(0, 5).join(', ')}`)
    }
    const budgets = { subscribe: this.deps.subscribeBudget, newChannels: this.deps.newChannelBudget }
    const fresh = budgets.newChannels === undefined ? 0 : this.deps.hub.unheldCount(channels)
    const refused = chargeSubscribe(budgets, this.budgetKey, channels.length, fresh)
    if (refused === 'subscribe_budget') {
      throw new ClientError('rate_limited', `too many channel subscriptions (${budgets.subscribe?.perSecond ?? 0}/s for a user); slow down`)
    }
    if (refused === 'new_channels') throw new ClientError('rate_limited', NEW_CHANNELS_REFUSED)
    // What the budgets took is given back for a subscribe refused before it was made.
    const refund = (): void => { refundSubscribe(budgets, this.budgetKey, channels.length, fresh) }
    // Only a resume or a rewind reads history; a plain subscribe reads positions.
    const reads = this.deps.historyReadBudget
    const replays = reads !== undefined && (rewind !== undefined || (since !== undefined && Object.keys(since).length > 0))
    const readRefused = replays ? reads.admit(this.budgetKey) : undefined
    if (readRefused !== undefined) {
      refund()
      throw new ClientError('rate_limited', HISTORY_READ_REFUSED[readRefused])
    }
    let storeBytes = 0
    let outcome
    try {
      outcome = await this.deps.hub.subscribe(this, channels, since, rewind)
      storeBytes = outcome.storeBytes
    } catch (err) {
      refund() // too many channels for the connection, the broker away: nothing was made
      throw err
    } finally {
      if (replays) reads.settle(this.budgetKey, storeBytes)
    }
    if (!outcome.replayCanStart()) {
      outcome.abandon()
      throw new ClientError('rate_limited', REPLAY_ROOM_TAKEN)
    }
    // Own channels named with no `since` while the greeting's hold is on: what it held goes
    // before the answer, whose position counts it (audit, session 29: it came after, and a
    // client that kept the answer's position and dropped first resumed past it).
    if (this.pendingEvents !== null) {
      const named = defaultChannels(this.identity).filter((c) => channels.includes(c) && since?.[c] === undefined)
      if (named.length > 0) this.deps.hub.release(this, named)
    }
    this.send(serverFrame.reply(replyType, id, {
      channels,
      positions: outcome.positions,
      recovered: outcome.recovered
    }))
    outcome.replay()
  }

  /** Whose budgets this connection spends: its user's, or its address's without one. */
  private get budgetKey (): string {
    return budgetKeyOf(this.identity, this.id)
  }

  private async presence (channel: string, id: string | number | undefined): Promise<void> {
    if (!canSubscribe(this.identity, channel)) throw new ClientError('forbidden', `not allowed to read ${channel}`)
    const totals = await this.deps.hub.presenceOf(channel)
    if (totals === undefined) throw new ClientError('bad_request', `presence is kept only for channels under PRESENCE_CHANNELS; ${channel} is not`)
    this.send(serverFrame.presence(channel, totals, id))
  }

  private unsubscribe (channels: string[], id: string | number | undefined, replyType: string): void {
    channels = distinct(channels)
    this.deps.hub.unsubscribe(this, channels)
    this.send(serverFrame.reply(replyType, id, { channels }))
  }

  private refresh (token: string, id: string | number | undefined): void {
    let identity: Identity
    try {
      identity = this.deps.verifyToken(token)
    } catch {
      throw new ClientError('forbidden', 'token is invalid or expired')
    }
    if (identity.userId !== this.identity.userId) {
      throw new ClientError('forbidden', 'the new token must name the same user')
    }
    if (identity.exp === undefined && this.identity.exp !== undefined) {
      // A refresh extends a connection's life; it must not make it endless.
      throw new ClientError('forbidden', 'the new token must have an exp')
    }
    // The session itself is the expiry entry (no closure per connection), moved to the new exp.
    this.deps.expiries.unwatch(this.identity.exp, this)
    this.identity = identity.userId === null ? { ...identity, clientIp: this.identity.clientIp } : identity
    this.deps.expiries.watch(identity.exp, this)
    // Channels the new token's roles may not read are left at once (an admin refreshed to a
    // plain user's token stops receiving admin events).
    const held = this.deps.hub.channelsOf(this)
    const left = this.deps.hub.unsubscribe(this, held.filter((c) => !canSubscribe(this.identity, c)))
    this.send(serverFrame.reply('auth:refreshed', id))
    if (left.length > 0) this.send(serverFrame.reply('unsubscribed', undefined, { channels: left }))
  }

  private fail (err: unknown, id: string | number | undefined): void {
    if (err instanceof ClientError) {
      this.send(serverFrame.error(err.code, err.message, id))
      return
    }
    if (err instanceof BrokerUnavailableError) {
      // Redis away (an outage, a shard's failover): every subscribe meanwhile comes here, and
      // the readiness probe and the broker's own log say why; no stack, and a line per
      // interval for the instance, saying how many more there were.
      const heldBack = this.deps.brokerDownWarning === undefined ? 0 : this.deps.brokerDownWarning.occurred()
      if (heldBack !== undefined) this.deps.log.warn({ connectionId: this.id, reason: err.message, heldBack }, 'frame handling failed: the broker is unavailable')
      this.send(serverFrame.error('internal', 'the broker is unavailable; try again shortly', id))
      return
    }
    this.deps.log.error({ err, connectionId: this.id }, 'frame handling failed')
    this.send(serverFrame.error('internal', 'internal error', id))
  }
}

/** The names once each, in their first order (the array itself when there is nothing to drop). */
function distinct (channels: string[]): string[] {
  return channels.length < 2 || new Set(channels).size === channels.length ? channels : [...new Set(channels)]
}
