import { covers, type Revocation, revocationName } from '../auth/revocations.js'

/** What the relay holds at most: a revoke past it is answered 503 and enforced here, but not passed on later (a retry does). */
export const RELAY_LIMIT = 10_000

interface Held {
  revocation: Revocation
  reason: string
}

/**
 * Revocations this instance enforces but could not hand to the broker (docs/protocol.md,
 * "Disconnect and revoke": the route answered 503). A store that timed out may still land
 * in Redis later, when a hung master wakes or its replica takes over, while its message
 * never went out: the other instances would not learn of it before their next reload
 * (audit, session 26: 15 revocations kept in Redis, enforced by none of the running
 * instances). The relay passes each one on (store, then the message) once the broker
 * answers again, until it is through or has ended; a revocation revoked again is merged.
 */
export class RevocationRelay {
  private readonly held = new Map<string, Held>()
  private flushing: Promise<void> | null = null

  constructor (
    /** Hands one revocation to the broker: keeps it and tells every instance. Throws while the broker cannot. */
    private readonly passOn: (revocation: Revocation, reason: string) => Promise<void>
  ) {}

  /** Keeps a revocation to pass on; false when the relay is full (RELAY_LIMIT). */
  hold (revocation: Revocation, reason: string): boolean {
    const name = revocationName(revocation)
    const known = this.held.get(name)
    if (known === undefined && this.held.size >= RELAY_LIMIT) return false
    this.held.set(name, { revocation: known === undefined ? revocation : merged(known.revocation, revocation), reason })
    return true
  }

  get size (): number {
    return this.held.size
  }

  /**
   * Passes on what is held, in the order it came, and forgets what went through or ended;
   * stops at the first failure (the broker is still away: the rest would fail the same way).
   * One flush at a time: a call while one runs waits for it.
   */
  async flush (now = Date.now()): Promise<void> {
    this.flushing ??= this.passHeld(now).finally(() => { this.flushing = null })
    return await this.flushing
  }

  private async passHeld (now: number): Promise<void> {
    for (const [name, { revocation, reason }] of [...this.held]) {
      if (revocation.until <= now) {
        this.held.delete(name)
        continue
      }
      await this.passOn(revocation, reason)
      // Revoked again meanwhile with more: that one stays for the next flush.
      const current = this.held.get(name)
      if (current !== undefined && covers(revocation, current.revocation)) this.held.delete(name)
    }
  }
}

/** Both revocations of one user or jti as one: the later moment and the longer life (RevocationList.apply). */
function merged (a: Revocation, b: Revocation): Revocation {
  if (a.kind === 'user' && b.kind === 'user') {
    return { kind: 'user', userId: a.userId, issuedBefore: Math.max(a.issuedBefore, b.issuedBefore), until: Math.max(a.until, b.until) }
  }
  return { ...a, until: Math.max(a.until, b.until) }
}
