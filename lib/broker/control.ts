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
  private readonly kept: Revocation[] = []

  async send (message: ControlMessage): Promise<void> {
    this.listener(message)
  }

  onMessage (listener: (message: ControlMessage) => void): void {
    this.listener = listener
  }

  async store (revocation: Revocation): Promise<void> {
    const now = Date.now()
    for (let i = this.kept.length - 1; i >= 0; i--) if (this.kept[i].until <= now) this.kept.splice(i, 1)
    this.kept.push(revocation)
  }

  async load (): Promise<Revocation[]> {
    const now = Date.now()
    return this.kept.filter((r) => r.until > now)
  }

  onResync (): void {}
}
