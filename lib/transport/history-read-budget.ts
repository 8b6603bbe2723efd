import { monotonicMs } from '../core/clock.js'
import { fullBucket, refillBucket, type TokenBucket } from './token-bucket.js'

/** Whose budget refused a read: its user's (or address's), or the instance's. */
export type HistoryReadRefusal = 'user' | 'instance'

/** What a refused reader is told, by whose budget refused it. */
export const HISTORY_READ_REFUSED: Record<HistoryReadRefusal, string> = {
  user: 'too much history read for this user just now; try again in a moment',
  instance: 'this instance is reading too much history just now; try again in a moment'
}

/** Per user: the bytes left to read (thousandths, as TokenBucket counts) and the reads under way. */
interface Account {
  bucket: TokenBucket
  reading: number
}

/**
 * History a user may read on this instance, across its WebSocket resumes and rewinds, SSE
 * streams and the history route: bytes per second (HISTORY_READ_BYTES_PER_SECOND, bursts of
 * HISTORY_READ_BYTES_BURST), and at most READS_AT_ONCE such reads under way at a time. A
 * resume or rewind is charged what the store (Redis) sent for it: what memory answers
 * (docs/operations.md, "Reads answered from memory") costs nothing. A history answer is
 * charged what it weighs, and is under way until it has left: 200 answers of 6.5 MB to
 * readers that never read took the memory broker's process to 1.4 GB.
 *
 * Why: Redis keeps what the gateway has not read yet without limit, and its core is every
 * instance's (reads have a connection of their own since session 31; before, a read's reply
 * came back on the connection publishes share). A user reopening 50 SSE streams with
 * `rewind=100` on a channel whose history held 6.5 MB of events had Redis hold 7.7 GB of
 * replies within 20 s, and nearly every publish of every service timed out (503) meanwhile
 * (a black-box audit, session 22). A read's size is known only once it is done: it is
 * admitted while the user has budget left and charged afterwards, past zero if it must
 * (the next ones wait until the budget has refilled). Counted per user (per address
 * without one), like the subscribe budget.
 *
 * And the instance's own budget over every user (INSTANCE_HISTORY_READ_BYTES_PER_SECOND,
 * bursts of INSTANCE_HISTORY_READ_BYTES_BURST), charged alike. Why: each user within its
 * own budget, fifteen users rewinding 6 MB histories had one instance read 105–213 MB/s
 * from Redis, up to 45 % of Redis's core, which every instance's publishes share
 * (bench/README.md, "Session 31"); more users, or more instances, would take the rest. Its
 * debt is floored at one burst: reads under way when it ran out (a storm's thousands) must
 * not keep every user's resumes refused for minutes (review, session 31).
 */
export class HistoryReadBudget {
  private readonly accounts = new Map<string, Account>()
  private readonly instance: TokenBucket
  private settles = 0

  constructor (readonly bytesPerSecond: number, readonly burstBytes: number,
    readonly instanceBytesPerSecond = Infinity, readonly instanceBurstBytes = Infinity, now = monotonicMs()) {
    this.instance = fullBucket(instanceBurstBytes, now)
  }

  /**
   * Starts a read for `key` if its user's budget and the instance's allow it: undefined, and
   * the read is under way until `settle`. Otherwise whose budget refused it.
   */
  admit (key: string, now = monotonicMs()): HistoryReadRefusal | undefined {
    let account = this.accounts.get(key)
    if (account !== undefined) {
      refillBucket(account.bucket, this.bytesPerSecond, this.burstBytes, now)
      if (account.bucket.milliTokens <= 0 || account.reading >= READS_AT_ONCE) return 'user'
    }
    refillBucket(this.instance, this.instanceBytesPerSecond, this.instanceBurstBytes, now)
    // A user refused by the instance is not remembered: refusals keep no state.
    if (this.instance.milliTokens <= 0) return 'instance'
    if (account === undefined) this.accounts.set(key, account = { bucket: fullBucket(this.burstBytes, now), reading: 0 })
    account.reading++
    return undefined
  }

  /** The read `admit` let start is done, having brought `bytes` from the store. */
  settle (key: string, bytes: number, now = monotonicMs()): void {
    const account = this.accounts.get(key)
    if (account === undefined) return
    account.reading = Math.max(0, account.reading - 1)
    refillBucket(account.bucket, this.bytesPerSecond, this.burstBytes, now)
    account.bucket.milliTokens -= bytes * 1000
    refillBucket(this.instance, this.instanceBytesPerSecond, this.instanceBurstBytes, now)
    this.instance.milliTokens = Math.max(-this.instanceBurstBytes * 1000, this.instance.milliTokens - bytes * 1000)
    if (++this.settles % SWEEP_EVERY === 0) this.sweep(now)
  }

  /** Users with reads under way or a budget not full again (the others are forgotten from time to time). */
  get size (): number {
    return this.accounts.size
  }

  private sweep (now: number): void {
    for (const [key, account] of this.accounts) {
      refillBucket(account.bucket, this.bytesPerSecond, this.burstBytes, now)
      if (account.reading === 0 && account.bucket.milliTokens >= this.burstBytes * 1000) this.accounts.delete(key)
    }
  }
}

/** Reads from the store a user may have under way at once (what one connection's burst of resumes needs, and more). */
export const READS_AT_ONCE = 16

/** Settles between sweeps. */
const SWEEP_EVERY = 1024

/** Whose budget a connection or request spends: its user's, or its address's without one. */
export function budgetKeyOf (identity: { userId: string | null, clientIp?: string }, fallback: string): string {
  return identity.userId !== null ? `u:${identity.userId}` : identity.clientIp !== undefined ? `a:${identity.clientIp}` : `c:${fallback}`
}
