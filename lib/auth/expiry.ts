/**
 * The clock leeway a token gets (docs/protocol.md, Tokens: no more than one second). Verification and
 * the connection's end use the same figure, so a token accepted at connect is not cut
 * the same instant, sending its client into a connect/close loop for that second.
 */
export const CLOCK_TOLERANCE_MS = 1000

/** Largest delay setTimeout accepts; longer lifetimes are re-armed when it fires. */
const MAX_TIMER_MS = 2 ** 31 - 1

/** Something to end when its token expires: a connection's session, say. */
export interface Expiring {
  expire(): void
}

const nothing = (): void => {}
const dueAt = (exp: number): number => exp * 1000 + CLOCK_TOLERANCE_MS

/**
 * Every pending expiry of one app, by the second it falls due (`exp` is whole epoch
 * seconds), behind one timer for the earliest. A timer and its closures per connection
 * were a large part of an idle connection's memory; here a connection costs a Set entry
 * and nothing else: the connection itself is the entry, no closure to call it or to
 * cancel it. Each app makes its own (plugins/auth.ts), so two apps in one process never
 * share entries or a timer.
 */
export class Expiries {
  private readonly due = new Map<number, Set<Expiring>>()
  private timer: NodeJS.Timeout | undefined
  private timerExp = Infinity

  /**
   * Calls `target.expire()` when a token's `exp` (epoch seconds) plus the leeway passes;
   * nothing for a token without one. The timer does not keep the process alive. A target
   * watched twice for the same second expires once; `unwatch` with the same `exp` cancels.
   */
  watch (exp: number | undefined, target: Expiring): void {
    if (exp === undefined) return
    let targets = this.due.get(exp)
    if (targets === undefined) this.due.set(exp, (targets = new Set()))
    targets.add(target)
    if (exp < this.timerExp) this.arm(exp)
  }

  /** Cancels `watch(exp, target)`; nothing if it already fired or was never made. */
  unwatch (exp: number | undefined, target: Expiring): void {
    if (exp === undefined) return
    const targets = this.due.get(exp)
    if (targets === undefined) return
    targets.delete(target)
    if (targets.size === 0) this.due.delete(exp)
  }

  /**
   * `watch` for a callback; returns its cancel function. Costs a closure or two per
   * call, so long-lived connections in numbers use `watch` on themselves instead.
   */
  schedule (exp: number | undefined, onExpired: () => void): () => void {
    if (exp === undefined) return nothing
    const target: Expiring = { expire: onExpired }
    this.watch(exp, target)
    return () => { this.unwatch(exp, target) }
  }

  /** How many targets are waiting. */
  get size (): number {
    let n = 0
    for (const targets of this.due.values()) n += targets.size
    return n
  }

  /** Forgets every pending expiry and stops the timer (the app is closing). */
  close (): void {
    clearTimeout(this.timer)
    this.timer = undefined
    this.timerExp = Infinity
    this.due.clear()
  }

  private arm (exp: number): void {
    clearTimeout(this.timer)
    this.timerExp = exp
    this.timer = setTimeout(this.fire, Math.max(0, Math.min(dueAt(exp) - Date.now(), MAX_TIMER_MS)))
    this.timer.unref()
  }

  private readonly fire = (): void => {
    this.timer = undefined
    this.timerExp = Infinity
    const now = Date.now()
    let next = Infinity
    for (const [exp, targets] of this.due) {
      if (dueAt(exp) > now) {
        if (exp < next) next = exp
        continue
      }
      this.due.delete(exp)
      for (const target of targets) {
        try {
          target.expire()
        } catch (err) {
          // As from a timer of its own: the error surfaces, the other expiries still run.
          process.nextTick(() => { throw err })
        }
      }
    }
    if (next < this.timerExp) this.arm(next)
  }
}
