import { monotonicMs } from '../core/clock.js'
import { fullBucket, refillBucket, type TokenBucket } from './token-bucket.js'

/**
 * What a user may spend per second on this instance across all its WebSocket connections
 * (per client address without a user): a token bucket per user. Two are kept; the first
 * also counts the channels its SSE streams name besides their own.
 *
 * Channels subscribed to (WS_SUBSCRIBES_PER_SECOND, bursts of WS_SUBSCRIBES_BURST): each
 * channel a subscribe names costs one. Why apart from the frame rate limit: that one counts
 * frames, and a frame may name up to 128 new channels, each a join, a leave and presence
 * bookkeeping later. One user with its 100 connections, alternating subscribes and
 * unsubscribes of 127 fresh names within the frame limit, held the event loop for tens of
 * seconds (everyone's events late). Counted per user (per address without one), not per
 * connection, for that reason. A fresh `room:` name subscribed and left costs 59 µs of CPU
 * on the memory broker, 146 µs on Redis and 287 µs on a Redis Cluster (session 29, one
 * connection churning 1.2k names a second): the default rate, 1280 a second, is then at
 * most a third of a core per user on a cluster. It was 6400, what one connection at the frame
 * limit can ask: 1.8 cores' worth there, and one user's 24 connections stalled an instance
 * and every publish through it for 40 s (audit, session 29). The burst is every connection
 * of a user subscribing its 128 channels at once (a reconnect). Unsubscribes are not
 * counted: a client can only leave what it joined.
 *
 * New channels (NEW_CHANNELS_PER_SECOND, bursts of NEW_CHANNELS_BURST): one budget for the
 * whole instance (key INSTANCE), charged for the channels a WebSocket subscribe or an SSE
 * stream names that no local connection holds yet (a channel already held costs a join,
 * no more; a connection's own channels at connect are free). Why besides each user's: five
 * users, each within its own burst (100 connections subscribing 127 fresh names at once),
 * stalled an instance for 5–13 s, its Redis commands timing out, every victim's events
 * seconds late; three users' steady churn within their rates held victims' events a second
 * late (audit, session 30). The default, 2560 a second, is at most some 0.4 of a core on
 * Redis and 0.5 on a cluster (150–190 µs a name); its burst, 6400, what one connection at the
 * frame limit can ask at once (50 subscribes of 127), about a second of CPU: with one user's
 * 12,800 the five users' burst still held the event loop 1.1–1.3 s (re-check, session 30).
 * Past it a subscribe gets `rate_limited` and an SSE stream `system:unavailable`, to come back.
 * Each user may take at most an eighth of it per second (a quarter of its burst, at least a
 * connection's channels): with the instance's alone, two users churning within their own
 * budgets kept every other user's new channels refused (review, session 30); now it takes
 * eight. What a refused or failed subscribe took is given back (NewChannelBudget, refund).
 *
 * Bytes of frames received (WS_INBOUND_BYTES_PER_SECOND, bursts of WS_INBOUND_BYTES_BURST):
 * a frame's cost is not its count. A 60 KB frame of 6000 keys takes ~4.4 ms to parse here;
 * within the frame limit (50/s) one connection spent a fifth of a core on them, and one
 * user's 20 connections held everyone's events 8 s late (a black-box audit, session 22).
 * The defaults are far above what a client sends (subscribes of a few KB), and bound such
 * parsing to a few percent of a core per user.
 */
export class UserBudget {
  private readonly buckets = new Map<string, TokenBucket>()
  private takes = 0

  constructor (readonly perSecond: number, readonly burst: number) {}

  /** Takes `amount` from `key`'s budget; false (and nothing taken) when it has less left. */
  take (key: string, amount: number, now = monotonicMs()): boolean {
    let bucket = this.buckets.get(key)
    if (bucket === undefined) this.buckets.set(key, bucket = fullBucket(this.burst, now))
    refillBucket(bucket, this.perSecond, this.burst, now)
    if (bucket.milliTokens < amount * 1000) return false
    bucket.milliTokens -= amount * 1000
    if (++this.takes % SWEEP_EVERY === 0) this.sweep(now)
    return true
  }

  /** Gives back what `take` took for something then not done (never past the burst). */
  refund (key: string, amount: number): void {
    const bucket = this.buckets.get(key)
    if (bucket !== undefined) bucket.milliTokens = Math.min(this.burst * 1000, bucket.milliTokens + amount * 1000)
  }

  /** Users with a budget not full again (the others are forgotten from time to time). */
  get size (): number {
    return this.buckets.size
  }

  /** Forgets full budgets: one for every user that ever spent any would grow for ever. */
  private sweep (now: number): void {
    for (const [key, bucket] of this.buckets) {
      refillBucket(bucket, this.perSecond, this.burst, now)
      if (bucket.milliTokens >= this.burst * 1000) this.buckets.delete(key)
    }
  }
}

/** The key of the instance's one new-channel budget. */
const INSTANCE = ''
/** A user's share of the instance's new channels per second: an eighth. */
const USER_SHARE = 8
/** A connection's channels when not given (MAX_CHANNELS_PER_CONNECTION's default). */
const CONNECTION_CHANNELS = 128

/**
 * Channels the instance takes on (NEW_CHANNELS_PER_SECOND, bursts of NEW_CHANNELS_BURST),
 * with each user's share of them; see UserBudget's comment, "New channels".
 */
export class NewChannelBudget {
  private readonly instance: UserBudget
  private readonly shares: UserBudget

  /**
   * `connectionChannels`: what one subscribe may name (MAX_CHANNELS_PER_CONNECTION). A user's
   * share of the burst is never below it (nor above the whole burst): with a fixed floor of
   * 128, a limit raised to 2000 met a share of 1600, and such a subscribe never passed.
   */
  constructor (readonly perSecond: number, readonly burst: number, connectionChannels = CONNECTION_CHANNELS) {
    this.instance = new UserBudget(perSecond, burst)
    this.shares = new UserBudget(Math.max(1, Math.floor(perSecond / USER_SHARE)), Math.max(Math.min(burst, connectionChannels), Math.floor(burst / 4)))
  }

  /** Takes `count` new channels for `user` (a budget key): false, and nothing taken, when its share or the instance has less left. */
  take (user: string, count: number, now = monotonicMs()): boolean {
    if (count === 0) return true
    if (!this.shares.take(user, count, now)) return false
    if (this.instance.take(INSTANCE, count, now)) return true
    this.shares.refund(user, count)
    return false
  }

  /** Gives back what `take` took for a subscribe then not made. */
  refund (user: string, count: number): void {
    if (count === 0) return
    this.shares.refund(user, count)
    this.instance.refund(INSTANCE, count)
  }
}

/** The budgets a subscribe spends: its user's channels, and the instance's new ones. */
export interface SubscribeBudgets {
  subscribe?: UserBudget
  newChannels?: NewChannelBudget
}

/**
 * Charges a subscribe (a WebSocket frame, an SSE stream) of `named` channels, `fresh` of them
 * new to the instance, to `key`'s budgets: the user's first, then the instance's new channels.
 * Refused, it names the budget and takes nothing; what it took goes back with refundSubscribe
 * when the subscribe is then not made.
 */
export function chargeSubscribe (budgets: SubscribeBudgets, key: string, named: number, fresh: number): 'subscribe_budget' | 'new_channels' | null {
  if (budgets.subscribe !== undefined && !budgets.subscribe.take(key, named)) return 'subscribe_budget'
  if (budgets.newChannels !== undefined && !budgets.newChannels.take(key, fresh)) {
    budgets.subscribe?.refund(key, named)
    return 'new_channels'
  }
  return null
}

/** Gives back what chargeSubscribe took for a subscribe then not made. */
export function refundSubscribe (budgets: SubscribeBudgets, key: string, named: number, fresh: number): void {
  budgets.subscribe?.refund(key, named)
  budgets.newChannels?.refund(key, fresh)
}

/** What a subscribe past the instance's new-channel budget is told. */
export const NEW_CHANNELS_REFUSED = 'this instance is taking on too many new channels just now; try again in a moment'

/** Takes between sweeps: a sweep walks the users whose budget is not full. */
const SWEEP_EVERY = 1024
