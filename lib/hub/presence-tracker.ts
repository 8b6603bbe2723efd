import {
  EMPTY_SHARE, PRESENCE_BEATS_PER_INTERVAL, type PresenceBackend, type PresenceCounts, type PresenceShare, type PresenceTotals,
  sameCounts, sameShare, totalsOf
} from '../core/presence.js'
import { PresenceTally } from './presence-tally.js'
import { monotonicMs } from '../core/clock.js'

export interface PresenceLogger {
  warn(obj: object, msg: string): void
  info(obj: object, msg: string): void
}

export interface PresenceTrackerOptions {
  intervalMs: number
  /** Other instances' shares; absent on the memory broker (this instance is all there is). */
  backend?: PresenceBackend
  /**
   * Sends the counts to every local subscriber of the channel that was not told them yet:
   * `previous` is what the channel's subscribers were last told (undefined: nothing), except
   * those greeted since with other counts (PresenceTracker.greeted).
   */
  push(channel: string, counts: PresenceCounts, previous: PresenceCounts | undefined): void
  log?: PresenceLogger
  /** How often every held share is written again even when unchanged, so Redis's copy never expires under it. */
  refreshMs?: number
}

interface ChannelState {
  /** Other live instances' shares. */
  remote: Map<string, PresenceShare>
  /**
   * What this instance last told the others: EMPTY_SHARE until it told them anything (a
   * channel joined and left within an interval costs Redis nothing), undefined when unsure
   * (a write failed, or it must be told again: rejoined, refreshed).
   */
  written?: PresenceShare
  /** What the local subscribers were last told. */
  pushed?: PresenceCounts
  /** A subscriber was greeted with other counts than `pushed` since the last push: the next push goes out even if the counts are `pushed` again. */
  greetedApart?: boolean
  /** Held locally (false once the last local subscriber left: the share still has to be withdrawn). */
  held: boolean
  /** The counts, local and remote, kept current (lib/hub/presence-tally.ts). */
  tally: PresenceTally
  /** The other instances' shares were read (open). */
  loaded: boolean
  /** When the local subscribers were last told (monotonicMs). */
  pushedAt?: number
  /** A push held back until an interval after the last one. */
  deferred?: NodeJS.Timeout
}

const DEFAULT_REFRESH_MS = 3_600_000

/** Share writes issued per turn of the event loop in a tick. */
const WRITES_PER_SLICE = 256
/** Failed withdrawals remembered at most (during a Redis outage): past that, Redis's TTL on the share ends it. */
const MAX_OWED_WITHDRAWALS = 10_000

/**
 * The moving part of presence (lib/core/presence.ts): which channels' shares changed, one
 * timer for all of them, the throttle (each channel's subscribers are told at most once per
 * interval), and the other instances' shares of the channels held here.
 */
export class PresenceTracker {
  private readonly channels = new Map<string, ChannelState>()
  /** Channels whose local share may have changed since the last tick. */
  private readonly localDirty = new Set<string>()
  /** Channels let go of whose withdrawal failed: tried again at the next tick (withdraw). */
  private readonly owedWithdrawals = new Set<string>()
  /** Channels whose totals may have changed since the last tick. */
  private readonly totalsDirty = new Set<string>()
  /** Every interval a tick; with a backend, heartbeats between (PRESENCE_BEATS_PER_INTERVAL steps an interval). */
  private readonly timer: NodeJS.Timeout
  private steps = 0
  private live: Set<string> | null = null
  /** Where the rolling refresh stands in `channels` (refreshSlice). */
  private refreshCursor: Iterator<string> | null = null
  private ticking = false
  /** A tick came due while one was still running (tick). */
  private tickPending = false
  /** Whether a heartbeat has worked yet, and how many have failed since the last that did (beat). */
  private beaten = false
  private beatFailures = 0
  private closed = false

  constructor (private readonly options: PresenceTrackerOptions) {
    options.backend?.onShare((channel, nodeId, share) => this.onShare(channel, nodeId, share))
    const perInterval = options.backend === undefined ? 1 : PRESENCE_BEATS_PER_INTERVAL
    this.timer = setInterval(() => {
      // The tick beats first, so what it pushes reflects a heartbeat this instant.
      void (this.steps++ % perInterval === 0 ? this.tick() : this.beat())
    }, options.intervalMs / perInterval)
    this.timer.unref()
  }

  /**
   * A channel got its first local subscriber: the other instances' shares are read once,
   * so the subscriber's first counts already cover every instance.
   */
  async open (channel: string): Promise<void> {
    const state = this.stateOf(channel)
    state.held = true
    const backend = this.options.backend
    if (state.loaded || backend === undefined) return
    state.loaded = true
    try {
      for (const [nodeId, share] of await backend.load(channel)) setRemote(state, nodeId, share)
    } catch (err) {
      this.options.log?.warn({ err, channel }, 'presence: could not read the other instances\' shares; they come with their next change')
    }
  }

  /** Channels with state here. */
  get channelCount (): number {
    return this.channels.size
  }

  /** A local connection (its user, or null) joined the channel. */
  joined (channel: string, userId: string | null): void {
    const state = this.stateOf(channel)
    state.held = true
    state.tally.join(userId)
    this.localDirty.add(channel)
  }

  /** A local connection left the channel; `last`: it was the last local one. */
  left (channel: string, userId: string | null, last: boolean): void {
    const state = this.channels.get(channel)
    if (state === undefined) return
    state.tally.leave(userId)
    if (last) state.held = false
    this.localDirty.add(channel)
  }

  /** The channel's counts now, every instance's live share included: O(1). */
  counts (channel: string): PresenceCounts {
    return this.channels.get(channel)?.tally.counts() ?? { connections: 0, users: 0 }
  }

  /**
   * A new subscriber was just told `counts` (its first presence frame). When they are not
   * what the channel's subscribers were last told, a change back to those must still reach
   * it: skipping the push as unchanged left it on wrong numbers until the next change,
   * however long (a black-box audit: 27 of 4519 subscriptions, 15 s after churn stopped).
   */
  greeted (channel: string, counts: PresenceCounts): void {
    const state = this.channels.get(channel)
    if (state === undefined || sameCounts(state.pushed, counts)) return
    state.greetedApart = true
    this.totalsDirty.add(channel)
  }

  /** The channel's counts now with every user id (the HTTP route): O(users). */
  totals (channel: string): PresenceTotals {
    const state = this.channels.get(channel)
    if (state === undefined) return totalsOf([])
    return totalsOf([state.tally.localShare(), ...state.remote.values()])
  }

  private stateOf (channel: string): ChannelState {
    let state = this.channels.get(channel)
    if (state === undefined) this.channels.set(channel, state = { remote: new Map(), written: EMPTY_SHARE, held: true, tally: new PresenceTally(), loaded: false })
    return state
  }

  /** The counts of a channel that may not be held here (presence:get, the HTTP route). */
  async lookup (channel: string): Promise<PresenceTotals> {
    const state = this.channels.get(channel)
    if (state?.held === true || this.options.backend === undefined) return this.totals(channel)
    const remote = await this.options.backend.load(channel)
    return totalsOf([...(state === undefined ? [] : [state.tally.localShare()]), ...remote.values()])
  }

  /**
   * Shutting down: every share this instance told the others is withdrawn and it leaves the
   * heartbeats, so the others stop counting its connections at once and Redis keeps nothing
   * of it (best effort: what fails here dies with the heartbeat, within an interval).
   */
  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.timer)
    for (const state of this.channels.values()) clearTimeout(state.deferred)
    const backend = this.options.backend
    if (backend === undefined) return
    const withdrawals: Array<Promise<void>> = []
    for (const [channel, state] of this.channels) if (state.written?.connections !== 0) withdrawals.push(backend.write(channel, null))
    for (const channel of this.owedWithdrawals) if (!this.channels.has(channel)) withdrawals.push(backend.write(channel, null))
    withdrawals.push(backend.leave())
    await Promise.allSettled(withdrawals)
  }

  private onShare (channel: string, nodeId: string, share: PresenceShare | null): void {
    const state = this.channels.get(channel)
    if (state === undefined) return
    // A share from an instance the last heartbeat did not list yet (it started since) is
    // taken: it just published, so it is alive; the next beat drops it if it dies.
    if (this.live !== null && !this.live.has(nodeId) && share !== null) this.live.add(nodeId)
    setRemote(state, nodeId, share === null || share.connections === 0 ? undefined : share)
    this.totalsDirty.add(channel)
  }

  /** Once per interval: shares out, dead instances dropped, subscribers told what changed. */
  private async tick (): Promise<void> {
    if (this.ticking) {
      // A tick still waiting on its heartbeat (a slow Redis, a stalled event loop): this one
      // runs when it is done rather than not at all, or a change made meanwhile would wait a
      // whole interval more and be told later than two intervals after it.
      this.tickPending = true
      return
    }
    this.ticking = true
    try {
      await this.beat()
      this.refreshSlice()
      await this.writeShares()
      for (const channel of this.totalsDirty) this.pushIfChanged(channel)
      this.totalsDirty.clear()
    } finally {
      this.ticking = false
      if (this.tickPending && !this.closed) {
        this.tickPending = false
        void this.tick()
      }
    }
  }

  /**
   * Says this instance is alive and learns which others are; shares of those that are not
   * stop counting. If this instance had been counted as dead itself (its event loop or its
   * Redis stalled longer than the others allow), they dropped its shares: every held one is
   * written again at the next tick.
   */
  private async beat (): Promise<void> {
    const backend = this.options.backend
    if (backend === undefined) return
    let rejoined: boolean
    try {
      ({ live: this.live, rejoined } = await backend.beat())
    } catch (err) {
      // Said once per outage (a beat runs several times a second), and not before the first
      // beat has worked: at start the broker may still be connecting, and its own logs and
      // /health/ready already say when Redis is down.
      if (this.beaten && this.beatFailures === 0) this.options.log?.warn({ err }, 'presence: heartbeat failed (said once until it works again)')
      this.beatFailures++
      return
    }
    if (this.beatFailures > 0 && this.beaten) this.options.log?.info({ failed: this.beatFailures }, 'presence: heartbeat works again')
    this.beaten = true
    this.beatFailures = 0
    if (rejoined) {
      for (const [channel, state] of this.channels) {
        if (!state.held) continue
        state.written = undefined
        this.localDirty.add(channel)
      }
    }
    for (const [channel, state] of this.channels) {
      for (const nodeId of [...state.remote.keys()]) {
        if (this.live.has(nodeId)) continue
        setRemote(state, nodeId, undefined)
        this.totalsDirty.add(channel)
      }
    }
  }

  /**
   * Marks this tick's slice of the held channels to be written again, unchanged or not, so
   * that every share is rewritten about once per `refreshMs` and Redis's copy never expires
   * under it: a slice per tick rather than every channel at once, so 50k channels cost ~30
   * writes a tick, not 50k writes in one tick every hour.
   */
  private refreshSlice (): void {
    // At least one a tick: the cursor (a Map iterator) must move on, or it keeps every table
    // the map has outgrown since it was made alive (churned channels: ~170 B each, measured).
    const slice = Math.ceil(this.channels.size * this.options.intervalMs / (this.options.refreshMs ?? DEFAULT_REFRESH_MS))
    for (let i = 0; i < slice; i++) {
      let next = this.refreshCursor?.next()
      if (next === undefined || next.done === true) {
        // A pass is over (or never began): start the next one over the channels held now.
        this.refreshCursor = this.channels.keys()
        next = this.refreshCursor.next()
        if (next.done === true) return
      }
      const state = this.channels.get(next.value)
      // One being let go has its withdrawal coming (or nothing to withdraw): nothing to keep alive.
      if (state === undefined || !state.held) continue
      state.written = undefined
      this.localDirty.add(next.value)
    }
  }

  private async writeShares (): Promise<void> {
    const backend = this.options.backend
    const writes: Array<Promise<void>> = []
    let sinceYield = 0
    let failed = 0
    let firstError: unknown
    // Withdrawals that failed for channels let go since: retried first (withdraw).
    for (const channel of this.owedWithdrawals) {
      this.owedWithdrawals.delete(channel)
      const current = this.channels.get(channel)
      if (current !== undefined) {
        // Held again meanwhile: its next write replaces what Redis may still hold.
        current.written = undefined
        this.localDirty.add(channel)
      } else if (backend !== undefined) {
        writes.push(this.withdraw(backend, channel))
      }
    }
    // A snapshot: channels that change while this tick yields wait for the next one.
    const dirty = [...this.localDirty]
    this.localDirty.clear()
    for (const channel of dirty) {
      if (this.closed) break
      // Thousands of channels changed (a user subscribing to fresh names and leaving them):
      // other clients are served between slices rather than after one long stretch (audit:
      // 0.3–0.9 s stalls every interval).
      if (sinceYield >= WRITES_PER_SLICE) {
        sinceYield = 0
        await new Promise((resolve) => setImmediate(resolve))
      }
      const state = this.channels.get(channel)
      if (state === undefined) continue
      const share = state.held ? state.tally.localShare() : EMPTY_SHARE
      this.totalsDirty.add(channel)
      if (!state.held) this.channels.delete(channel)
      if (sameShare(state.written, share)) continue
      state.written = share
      if (backend === undefined) continue
      sinceYield++
      if (share.connections === 0 && !state.held) {
        writes.push(this.withdraw(backend, channel))
        continue
      }
      writes.push(backend.write(channel, share.connections === 0 ? null : share).catch((err: unknown) => {
        // Told again at the next tick.
        state.written = undefined
        if (this.channels.get(channel) === state) this.localDirty.add(channel)
        if (failed++ === 0) firstError = err
      }))
    }
    await Promise.all(writes)
    if (failed > 0) {
      // One line a tick, not one per channel (audit: 543 lines in an outage of a minute).
      this.options.log?.warn({ err: firstError, channels: failed }, 'presence: could not share this instance\'s counts')
    }
  }

  /**
   * Withdraws this instance's share of a channel it let go of; if that fails, the name is
   * kept (at most MAX_OWED_WITHDRAWALS of them) and the withdrawal tried again next tick,
   * or the share would count for hours while this instance lives.
   */
  private async withdraw (backend: PresenceBackend, channel: string): Promise<void> {
    try {
      await backend.write(channel, null)
    } catch (err) {
      if (this.owedWithdrawals.size < MAX_OWED_WITHDRAWALS) this.owedWithdrawals.add(channel)
      this.options.log?.warn({ err, channel }, 'presence: could not withdraw this instance\'s counts')
    }
  }

  private pushIfChanged (channel: string): void {
    const state = this.channels.get(channel)
    if (state === undefined || !state.held) return
    const { connections, users } = state.tally.counts()
    if (!state.greetedApart && sameCounts(state.pushed, { connections, users })) return
    // At most once per interval, measured between pushes: a tick pushes after its heartbeat's
    // round trip, whose length varies, so a slow tick then a fast one came a few ms closer
    // than the interval. The push waits out the rest (a few ms: still within two intervals).
    const wait = state.pushedAt === undefined ? 0 : state.pushedAt + this.options.intervalMs - monotonicMs()
    if (wait > 0) {
      state.deferred ??= setTimeout(() => {
        state.deferred = undefined
        this.pushIfChanged(channel)
      }, wait).unref()
      return
    }
    const previous = state.pushed
    state.pushedAt = monotonicMs()
    state.pushed = { connections, users }
    state.greetedApart = false
    this.options.push(channel, state.pushed, previous)
  }
}

/** Sets (or, undefined, drops) another instance's share, keeping the tally in step. */
function setRemote (state: ChannelState, nodeId: string, share: PresenceShare | undefined): void {
  const old = state.remote.get(nodeId)
  if (old !== undefined) state.tally.removeShare(old)
  if (share === undefined) {
    state.remote.delete(nodeId)
    return
  }
  state.remote.set(nodeId, share)
  state.tally.addShare(share)
}
