import type { BackoffOptions } from './options.js'
import type { TransportKind } from './transport.js'

/** A connection that lived this long resets the backoff; quicker flaps keep doubling it. */
const STABLE_MS = 5000

export interface NextAttempt {
  kind: TransportKind
  delayMs: number
  attempt: number
}

/**
 * Which transport to try next and when. WebSocket is preferred. A WebSocket that never
 * opened (blocked by a proxy) sends the client to SSE at once, and SSE is kept; one
 * that worked before is retried once first (the gateway may just be restarting), and
 * SSE that fails while WebSocket has worked goes back to WebSocket. Every retry but
 * that first fallback waits: exponential backoff with jitter, so a gateway that is down
 * (or restarting with many clients) is never hammered.
 */
export class ReconnectPolicy {
  private wsEverOpened = false
  private wsFailures = 0
  private attempts = 0
  private openedAt = 0

  constructor (readonly transports: readonly TransportKind[], private readonly backoff: BackoffOptions = {}) {}

  opened (kind: TransportKind): void {
    this.openedAt = Date.now()
    if (kind === 'ws') {
      this.wsEverOpened = true
      this.wsFailures = 0
    }
  }

  /**
   * After `kind` ended (`wasOpen`: it had been greeted). `transportFailed` is false when
   * no transport was even tried (a token function threw): the same one is retried.
   */
  next (kind: TransportKind, wasOpen: boolean, transportFailed: boolean): NextAttempt {
    if (wasOpen && Date.now() - this.openedAt >= STABLE_MS) this.attempts = 0
    if (kind === 'ws' && transportFailed && !wasOpen) this.wsFailures++
    const next = transportFailed ? this.pick(kind, wasOpen) : kind
    if (kind === 'ws' && next === 'sse' && !this.wsEverOpened) return { kind: next, delayMs: 0, attempt: this.attempts }
    const { initialMs = 500, maxMs = 30_000 } = this.backoff
    const ceiling = Math.min(maxMs, initialMs * 2 ** this.attempts)
    this.attempts++
    return { kind: next, delayMs: Math.round(ceiling / 2 + Math.random() * ceiling / 2), attempt: this.attempts }
  }

  private pick (kind: TransportKind, wasOpen: boolean): TransportKind {
    if (this.transports.length === 1) return this.transports[0]
    if (kind === 'ws') return wasOpen || (this.wsEverOpened && this.wsFailures < 2) ? 'ws' : 'sse'
    return this.wsEverOpened ? 'ws' : 'sse'
  }
}
