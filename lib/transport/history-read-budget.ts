import { monotonicMs } from '../core/clock.js'
import { fullBucket, refillBucket, type TokenBucket } from './token-bucket.js'

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
 * Why: a read's reply comes back on the connection publishes share, and Redis keeps what
 * the gateway has not read yet without limit. A user reopening 50 SSE streams with
 * `rewind=100` on a channel whose history held 6.5 MB of events had Redis hold 7.7 GB of
 * replies within 20 s, and nearly every publish of every service timed out (503) meanwhile
 * (a black-box audit, session 22). A read's size is known only once it is done: it is
 * admitted while the user has budget left and charged afterwards, past zero if it must
 * (the next ones wait until the budget has refilled). Counted per user (per address
 * without one), like the subscribe budget.
 */
export class HistoryReadBudget {
  private readonly accounts = new Map<string, Account>()
  private settles = 0

  constructor (readonly bytesPerSecond: number, readonly burstBytes: number) {}

  /** Whether `key` may start a read now; if so it is under way until `settle`. */
  admit (key: string, now = monotonicMs()): boolean {
    let account = this.accounts.get(key)
    if (account === undefined) this.accounts.set(key, account = { bucket: fullBucket(this.burstBytes, now), reading: 0 })
    refillBucket(account.bucket, this.bytesPerSecond, this.burstBytes, now)
    if (account.bucket.milliTokens <= 0 || account.reading >= READS_AT_ONCE) return false
    account.reading++
    return true
  }

  /** The read `admit` let start is done, having brought `bytes` from the store. */
  settle (key: string, bytes: number, now = monotonicMs()): void {
    const account = this.accounts.get(key)
    if (account === undefined) return
    account.reading = Math.max(0, account.reading - 1)
    refillBucket(account.bucket, this.bytesPerSecond, this.burstBytes, now)
    account.bucket.milliTokens -= bytes * 1000
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
