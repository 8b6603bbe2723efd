import { monotonicMs } from '../core/clock.js'
import { fullBucket, refillBucket, type TokenBucket } from './token-bucket.js'

/**
 * Channels a user may subscribe to per second on this instance, across all its
 * connections (WS_SUBSCRIBES_PER_SECOND, bursts of WS_SUBSCRIBES_BURST): each channel a
 * subscribe names costs one.
 *
 * Why apart from the frame rate limit: that one counts frames, and a frame may name up to
 * 128 new channels, each a join, a leave and presence bookkeeping later (some 15 µs of CPU
 * each here). One user with its 100 connections, alternating subscribes and unsubscribes
 * of 127 fresh names within the frame limit, held the event loop for tens of seconds
 * (everyone's events late). Counted per user (per address without one), not per
 * connection, for that reason; the defaults are what one connection at the frame limit can
 * ask, so a single connection never meets them. Unsubscribes are not counted: a client can
 * only leave what it joined.
 */
export class SubscribeBudget {
  private readonly buckets = new Map<string, TokenBucket>()
  private takes = 0

  constructor (readonly perSecond: number, readonly burst: number) {}

  /** Takes `channels` from `key`'s budget; false (and nothing taken) when it has fewer left. */
  take (key: string, channels: number, now = monotonicMs()): boolean {
    let bucket = this.buckets.get(key)
    if (bucket === undefined) this.buckets.set(key, bucket = fullBucket(this.burst, now))
    refillBucket(bucket, this.perSecond, this.burst, now)
    if (bucket.milliTokens < channels * 1000) return false
    bucket.milliTokens -= channels * 1000
    if (++this.takes % SWEEP_EVERY === 0) this.sweep(now)
    return true
  }

  /** Users with a budget not full again (the others are forgotten from time to time). */
  get size (): number {
    return this.buckets.size
  }

  /** Forgets full budgets: one for every user that ever subscribed would grow for ever. */
  private sweep (now: number): void {
    for (const [key, bucket] of this.buckets) {
      refillBucket(bucket, this.perSecond, this.burst, now)
      if (bucket.milliTokens >= this.burst * 1000) this.buckets.delete(key)
    }
  }
}

/** Takes between sweeps: a sweep walks the users whose budget is not full. */
const SWEEP_EVERY = 1024
