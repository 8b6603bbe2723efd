import type { Revocation } from '../auth/revocations.js'

/**
 * What admins and services do to live connections on every instance (docs/protocol.md,
 * "Disconnect and revoke"), carried by the broker: the memory broker hands a message to its
 * own instance; Redis publishes it to every instance and keeps revocations.
 */
export type ControlMessage = (
  | { kind: 'disconnect', userIds: string[], reason: string }
  | { kind: 'revoke', revocation: Revocation, reason: string }
) & {
  /** The sending instance, which acted on the message before answering (so it skips its own). */
  from?: string
}

export interface ControlBackend {
  /** Delivers the message to every instance, this one included, within a second. */
  send(message: ControlMessage): Promise<void>
  onMessage(listener: (message: ControlMessage) => void): void
  /** Keeps a revocation until it ends, for instances started later. */
  store(revocation: Revocation): Promise<void>
  /** Every revocation still in force. */
  load(): Promise<Revocation[]>
  /** Called when the instance may have missed messages (its broker connection came back): reload. */
  onResync(listener: () => void): void
}

/** One instance, no network: messages go straight back to it; revocations live in its memory. */
export class LocalControl implements ControlBackend {
  private listener: (message: ControlMessage) => void = () => {}
  /** One per user or jti, merged as Redis merges them (lib/broker/redis-control.ts). */
  private readonly kept = new Map<string, Revocation>()
  private prunedAt = 0

  async send (message: ControlMessage): Promise<void> {
    this.listener(message)
  }

  onMessage (listener: (message: ControlMessage) => void): void {
    this.listener = listener
  }

  async store (revocation: Revocation): Promise<void> {
    const now = Date.now()
    // Ended ones go at most once a minute: a revoke never scans them all (10 000 revokes in a row once took minutes).
    if (now - this.prunedAt >= 60_000) {
      this.prunedAt = now
      for (const [field, r] of this.kept) if (r.until <= now) this.kept.delete(field)
    }
    const field = revocationField(revocation)
    const known = this.kept.get(field)
    this.kept.set(field, known === undefined ? revocation : merged(known, revocation))
  }

  async load (): Promise<Revocation[]> {
    const now = Date.now()
    return [...this.kept.values()].filter((r) => r.until > now)
  }

  onResync (): void {}
}

/** Where a revocation is kept: one per user, one per jti. */
export const revocationField = (r: Revocation): string => r.kind === 'user' ? `u:${r.userId}` : `j:${r.jti}`

/** Two revocations of one field as one: the later issuedBefore and the later end win. */
function merged (known: Revocation, added: Revocation): Revocation {
  const until = Math.max(known.until, added.until)
  if (known.kind === 'user' && added.kind === 'user') return { ...added, issuedBefore: Math.max(known.issuedBefore, added.issuedBefore), until }
  return { ...added, until }
}
