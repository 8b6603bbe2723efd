import { type Revocation, RevocationList } from '../auth/revocations.js'
import { BrokerUnavailableError } from './broker.js'

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
  /** One per user or jti, merged as every instance merges them (RevocationList.apply). */
  private readonly kept = new RevocationList()
  private prunedAt = 0

  async send (message: ControlMessage): Promise<void> {
    this.listener(message)
  }

  onMessage (listener: (message: ControlMessage) => void): void {
    this.listener = listener
  }

  async store (revocation: Revocation): Promise<void> {
    const now = Date.now()
    // Ended ones go at most once a minute, not on every revoke.
    if (now - this.prunedAt >= 60_000) {
      this.prunedAt = now
      this.kept.prune(now)
    }
    this.kept.apply(revocation)
  }

  async load (): Promise<Revocation[]> {
    return this.kept.inForce()
  }

  onResync (): void {}
}

/**
 * A disconnect or revoke the broker could not carry to every instance (HTTP 503): `told` says
 * what did happen, since the instance that answered acted on its own connections first.
 */
export class ControlUnavailableError extends BrokerUnavailableError {
  constructor (readonly told: string, cause: unknown) {
    super(`the broker did not carry the control message: ${told}`, { cause })
  }
}
