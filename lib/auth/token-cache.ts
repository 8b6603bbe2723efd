import type { Identity } from './identity.js'

/**
 * Tokens already verified, by their exact string: a client that reconnects (a reconnect
 * storm after a deploy or a network blip, bench/storm.ts) presents the same token again,
 * and checking its signature again costs about half of a connection's CPU.
 *
 * Only what verified is kept, and only until the token's `exp`: from then on a lookup
 * misses, so the full verification (with its clock tolerance) decides as before. Nothing
 * else is skipped: revocations are checked on every use by the caller, since a token
 * revoked after it was cached must be refused. Bounded: the least recently used entry
 * leaves when the cache is full.
 */
export class VerifiedTokenCache {
  /** Insertion order is use order: a hit moves its entry to the end. */
  private readonly entries = new Map<string, Identity>()

  constructor (readonly maxEntries: number) {}

  /** The identity `token` verified to, while it has not expired at `now` (ms). */
  get (token: string, now = Date.now()): Identity | undefined {
    const identity = this.entries.get(token)
    if (identity === undefined) return undefined
    this.entries.delete(token)
    if (identity.exp !== undefined && identity.exp * 1000 <= now) return undefined
    this.entries.set(token, identity)
    return identity
  }

  /** Remembers a token that verified; the oldest entry leaves when full. */
  set (token: string, identity: Identity): void {
    if (this.maxEntries <= 0) return
    this.entries.delete(token)
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value as string)
    this.entries.set(token, identity)
  }

  get size (): number {
    return this.entries.size
  }
}
