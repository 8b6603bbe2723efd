import { createRequire } from 'node:module'

/**
 * kafkajs 2.2.4 (the last release) re-arms a timer after every check of a broker connection's
 * request queue, even with nothing waiting and no throttle: `setTimeout(throttledUntil -
 * Date.now())`, a negative delay, which Node runs after 1 ms. Every connection to a broker
 * ticks ~1000 times a second for its whole life: an idle gateway spent 4 % of a core on it,
 * and Node 24 prints a TimeoutNegativeWarning at every start (Node 24 soak, session 30;
 * tulios/kafkajs#1704, #1751, the fix #1768 never released).
 *
 * The guard the upstream fix makes: with nothing pending and no throttle there is nothing to
 * check later. A request that cannot go at once is queued and schedules its own check
 * (`push`), and each response checks the queue (`fulfillRequest`), so nothing waits for the
 * timer that is no longer set.
 */
interface RequestQueue {
  pending: unknown[]
  throttledUntil: number
  scheduleCheckPendingRequests: () => void
}

const require = createRequire(import.meta.url)
const PATCHED = Symbol.for('realtime-gateway.kafkajs.idle-queue-timer')

/** Applies the guard to kafkajs's RequestQueue once per process; true when it is in place. */
export function quietIdleRequestQueues (): boolean {
  let proto: RequestQueue & { [PATCHED]?: true, checkPendingRequests?: unknown }
  try {
    proto = (require('kafkajs/src/network/requestQueue/index.js') as { prototype: typeof proto }).prototype
  } catch {
    return false // another kafkajs, laid out otherwise: left alone
  }
  if (proto[PATCHED] === true) return true
  const schedule = proto.scheduleCheckPendingRequests
  // A kafkajs whose queue no longer looks like 2.2.4's is left alone (its own code may differ).
  if (typeof schedule !== 'function' || typeof proto.checkPendingRequests !== 'function') return false
  proto.scheduleCheckPendingRequests = function (this: RequestQueue): void {
    // Anything unexpected on the instance: kafkajs's own code, as shipped.
    if (Array.isArray(this.pending) && this.pending.length === 0 && typeof this.throttledUntil === 'number' && this.throttledUntil <= Date.now()) return
    schedule.call(this)
  }
  proto[PATCHED] = true
  return true
}
