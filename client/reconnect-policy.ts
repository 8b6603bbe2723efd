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
 * opened (blocked by a proxy) sends the client to SSE at once; one that worked before is
 * retried once first (the gateway may just be restarting). A WebSocket the gateway itself
 * answered with a close code (1013: a connection limit) was not blocked: it is retried,
 * never swapped for SSE. Whenever SSE ends or fails, WebSocket is tried first again, so
 * an outage or a limit never leaves the client on SSE for good (an audit saw it stay
 * there after the gateway was down at page load); behind a proxy that blocks the upgrade
 * that costs one refused WebSocket per reconnect, and the way back to SSE is then
 * immediate (audit: two refused WebSockets per SSE drop, each a backoff step). Every other
 * retry waits: exponential backoff with jitter, so a gateway that is down (or restarting
 * with many clients) is never hammered.
 */
export class ReconnectPolicy {
  private wsEverOpened = false
  /** WebSockets that failed to connect since one last opened: SSE opening since does not clear them. */
  private wsFailures = 0
  /** The transport of the connection that opened last. */
  private lastOpened: TransportKind | null = null
  /** The immediate fallback to SSE was taken since the last connection opened. */
  private fellBack = false
  private attempts = 0
  private openedAt = 0

  constructor (readonly transports: readonly TransportKind[], private readonly backoff: BackoffOptions = {}) {}

  opened (kind: TransportKind): void {
    this.openedAt = Date.now()
    this.lastOpened = kind
    // SSE opening after WebSockets failed says the gateway is up and the upgrade is what
    // fails on this path: those failures stand, so the next SSE drop tries WebSocket once.
    if (kind === 'ws') {
      this.wsEverOpened = true
      this.wsFailures = 0
    }
    this.fellBack = false
  }

  /**
   * The client closed a connection that was open to open another (an SSE stream reopened
   * with a new channel list): it was working, so the backoff starts over (audit: an app
   * subscribing every few seconds never let a stream live `STABLE_MS`, and every real drop
   * then waited longer than the last).
   */
  reopened (): void {
    this.attempts = 0
  }

  /**
   * After `kind` ended (`wasOpen`: it had been greeted). `transportFailed` is false when
   * no transport was even tried (a token function threw): the same one is retried.
   */
  next (kind: TransportKind, wasOpen: boolean, transportFailed: boolean, answered = false): NextAttempt {
    if (wasOpen && Date.now() - this.openedAt >= STABLE_MS) this.attempts = 0
    if (kind === 'ws' && transportFailed && !wasOpen && !answered) this.wsFailures++
    const next = transportFailed && !(kind === 'ws' && answered) ? this.pick(kind, wasOpen) : kind
    // The fallback to SSE is immediate once per connection: while the gateway is down both
    // fail, and the alternation must back off like any retry. Not for a WebSocket that worked
    // before (the gateway may be restarting), unless SSE is what worked since.
    if (kind === 'ws' && next === 'sse' && (!this.wsEverOpened || this.lastOpened === 'sse') && !this.fellBack) {
      this.fellBack = true
      return { kind: next, delayMs: 0, attempt: this.attempts }
    }
    const delayMs = backoffDelay(this.backoff, this.attempts)
    this.attempts++
    return { kind: next, delayMs, attempt: this.attempts }
  }

  private pick (kind: TransportKind, wasOpen: boolean): TransportKind {
    if (this.transports.length === 1) return this.transports[0]
    if (kind === 'ws') return wasOpen || (this.wsEverOpened && this.wsFailures < 2) ? 'ws' : 'sse'
    return this.transports.includes('ws') ? 'ws' : 'sse'
  }
}

/** The wait before retry number `attempt` (0 first): `initialMs` doubled each time up to `maxMs`, randomised to 50–100 % of it. */
export function backoffDelay ({ initialMs = 500, maxMs = 30_000 }: BackoffOptions = {}, attempt: number): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** attempt)
  return Math.round(ceiling / 2 + Math.random() * ceiling / 2)
}
