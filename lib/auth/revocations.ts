import type { Identity } from './identity.js'

/**
 * Revoked tokens (docs/protocol.md, "Disconnect and revoke"): by user (every token of the
 * user issued at or before a moment; a token without `iat` counts as issued before) or by
 * `jti`. Each revocation lasts until `until` (REVOCATION_TTL_SECONDS, or the token's own
 * expiry for a jti).
 *
 * This is every instance's local copy, so checking a token costs no round trip: the broker
 * keeps the revocations (Redis, so an instance started later knows them too) and tells
 * every instance of a new one; an instance merges the whole list in whenever its broker
 * connection comes back, so one missed while it was away is not missed for long.
 */
export type Revocation =
  | { kind: 'user', userId: string, issuedBefore: number, until: number }
  | { kind: 'jti', jti: string, until: number }

/** Whether this one revocation names a token of this identity (issued at or before, or by jti). */
export function revokes (revocation: Revocation, identity: Pick<Identity, 'userId' | 'iat' | 'jti'>): boolean {
  if (revocation.kind === 'jti') return identity.jti === revocation.jti
  return identity.userId === revocation.userId && (identity.iat === undefined || identity.iat <= revocation.issuedBefore)
}

/** The revocations of `held` that `stored` does not cover (one map lookup each: lists may hold tens of thousands). */
export function notCoveredBy (stored: readonly Revocation[], held: readonly Revocation[]): Revocation[] {
  const byName = new Map<string, Revocation>()
  for (const r of stored) byName.set(revocationName(r), r)
  return held.filter((r) => {
    const kept = byName.get(revocationName(r))
    return kept === undefined || !covers(kept, r)
  })
}

/** What a revocation is kept under: one per user, one per jti (the broker's field names too). */
export const revocationName = (r: Revocation): string => r.kind === 'user' ? `u:${r.userId}` : `j:${r.jti}`

/** Whether `kept` refuses at least what `revocation` does, for at least as long (same user or jti). */
export function covers (kept: Revocation, revocation: Revocation): boolean {
  if (kept.until < revocation.until) return false
  if (kept.kind === 'jti' || revocation.kind === 'jti') return kept.kind === 'jti' && revocation.kind === 'jti' && kept.jti === revocation.jti
  return kept.userId === revocation.userId && kept.issuedBefore >= revocation.issuedBefore
}

export class RevocationList {
  /** Per user: tokens issued at or before this (epoch seconds) are refused, until `until` (epoch ms). */
  private readonly users = new Map<string, { issuedBefore: number, until: number }>()
  private readonly jtis = new Map<string, number>()

  /** Adds a revocation; for a user the later moment and the longer life win. */
  apply (revocation: Revocation): void {
    if (revocation.kind === 'jti') {
      this.jtis.set(revocation.jti, Math.max(revocation.until, this.jtis.get(revocation.jti) ?? 0))
      return
    }
    const known = this.users.get(revocation.userId)
    this.users.set(revocation.userId, {
      issuedBefore: Math.max(revocation.issuedBefore, known?.issuedBefore ?? -Infinity),
      until: Math.max(revocation.until, known?.until ?? 0)
    })
  }

  /** Whether a token naming this identity is revoked now. */
  isRevoked (identity: Pick<Identity, 'userId' | 'iat' | 'jti'>, now = Date.now()): boolean {
    if (this.jtis.size === 0 && this.users.size === 0) return false
    if (identity.jti !== undefined) {
      const until = this.jtis.get(identity.jti)
      if (until !== undefined && until > now) return true
    }
    if (identity.userId === null) return false
    const user = this.users.get(identity.userId)
    if (user === undefined || user.until <= now) return false
    return identity.iat === undefined || identity.iat <= user.issuedBefore
  }

  /** Every revocation still in force, one per user and one per jti. */
  inForce (now = Date.now()): Revocation[] {
    const live: Revocation[] = []
    for (const [userId, r] of this.users) if (r.until > now) live.push({ kind: 'user', userId, issuedBefore: r.issuedBefore, until: r.until })
    for (const [jti, until] of this.jtis) if (until > now) live.push({ kind: 'jti', jti, until })
    return live
  }

  /** Drops revocations that have ended (called now and then; checks ignore them anyway). */
  prune (now = Date.now()): void {
    for (const [userId, r] of this.users) if (r.until <= now) this.users.delete(userId)
    for (const [jti, until] of this.jtis) if (until <= now) this.jtis.delete(jti)
  }

  get size (): number {
    return this.users.size + this.jtis.size
  }
}
