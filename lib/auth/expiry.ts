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

/**
 * Every pending expiry, by the second it falls due (`exp` is whole epoch seconds), behind
 * one timer for the earliest. A timer and its closures per connection were a large part
 * of an idle connection's memory; here a connection costs a Set entry and nothing else:
 * the connection itself is the entry, no closure to call it or to cancel it.
 */
const due = new Map<number, Set<Expiring>>()
let timer: NodeJS.Timeout | undefined
let timerExp = Infinity

const nothing = (): void => {}
const dueAt = (exp: number): number => exp * 1000 + CLOCK_TOLERANCE_MS

/**
 * Calls `target.expire()` when a token's `exp` (epoch seconds) plus the leeway passes;
 * nothing for a token without one. The timer does not keep the process alive. A target
 * watched twice for the same second expires once; `unwatchExpiry` with the same `exp`
 * cancels.
 */
export function watchExpiry (exp: number | undefined, target: Expiring): void {
  if (exp === undefined) return
  let targets = due.get(exp)
  if (targets === undefined) due.set(exp, (targets = new Set()))
  targets.add(target)
  if (exp < timerExp) arm(exp)
}

/** Cancels `watchExpiry(exp, target)`; nothing if it already fired or was never made. */
export function unwatchExpiry (exp: number | undefined, target: Expiring): void {
  if (exp === undefined) return
  const targets = due.get(exp)
  if (targets === undefined) return
  targets.delete(target)
  if (targets.size === 0) due.delete(exp)
}

/**
 * `watchExpiry` for a callback; returns its cancel function. Costs a closure or two per
 * call, so long-lived connections in numbers use `watchExpiry` on themselves instead.
 */
export function scheduleExpiry (exp: number | undefined, onExpired: () => void): () => void {
  if (exp === undefined) return nothing
  const target: Expiring = { expire: onExpired }
  watchExpiry(exp, target)
  return () => { unwatchExpiry(exp, target) }
}

function arm (exp: number): void {
  clearTimeout(timer)
  timerExp = exp
  timer = setTimeout(fire, Math.max(0, Math.min(dueAt(exp) - Date.now(), MAX_TIMER_MS)))
  timer.unref()
}

function fire (): void {
  timer = undefined
  timerExp = Infinity
  const now = Date.now()
  let next = Infinity
  for (const [exp, targets] of due) {
    if (dueAt(exp) > now) {
      if (exp < next) next = exp
      continue
    }
    due.delete(exp)
    for (const target of targets) {
      try {
        target.expire()
      } catch (err) {
        // As from a timer of its own: the error surfaces, the other expiries still run.
        process.nextTick(() => { throw err })
      }
    }
  }
  if (next < timerExp) arm(next)
}
