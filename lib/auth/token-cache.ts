import type { Identity } from './identity.js'

/**
 * Longer tokens are verified each time, not kept: the cache is bounded in entries, and this
 * bounds each entry, so MAX_CONNECTIONS entries stay a few MB whatever an issuer puts in a
 * token (an `auth:refresh` frame may carry up to 64 KiB).
 */
export const MAX_CACHED_TOKEN_LENGTH = 4096

/** Whether the identity's token has reached its `exp` at `now` (ms); one without `exp` never does. */
const expiredAt = (identity: Identity, now: number): boolean => identity.exp !== undefined && identity.exp * 1000 <= now

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
    if (expiredAt(identity, now)) return undefined
    this.entries.set(token, identity)
    return identity
  }

  /**
   * Remembers a token that verified; the oldest entry leaves when full. Not kept: a token
   * longer than MAX_CACHED_TOKEN_LENGTH, or one already past its `exp` (still inside the
   * verifier's clock tolerance), which `get` would never answer.
   */
  set (token: string, identity: Identity, now = Date.now()): void {
    if (this.maxEntries <= 0 || token.length > MAX_CACHED_TOKEN_LENGTH || expiredAt(identity, now)) return
    this.entries.delete(token)
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value as string)
    this.entries.set(token, identity)
  }

  get size (): number {
    return this.entries.size
  }
}
