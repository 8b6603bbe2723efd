import { createRequire } from 'node:module'
import t from 'tap'
import { quietIdleRequestQueues } from '../../lib/ingress/kafkajs-request-queue.js'

/**
 * kafkajs's request queue (one per broker connection) re-armed a 1 ms timer for ever while
 * idle (lib/ingress/kafkajs-request-queue.ts). With the guard: no timer while nothing waits
 * and no throttle; one still while a request waits or the broker throttles. On kafkajs's own
 * class; the Kafka tests (test/ingress/kafka*.test.ts) run the patched client against a real broker.
 */
interface Queue {
  pending: unknown[]
  throttleCheckTimeoutId: NodeJS.Timeout | null
  checkPendingRequests: () => void
  scheduleCheckPendingRequests: () => void
  maybeThrottle: (ms: number) => void
}
const RequestQueue = createRequire(import.meta.url)('kafkajs/src/network/requestQueue/index.js') as new (options: object) => Queue
const quiet = { debug () {}, info () {}, warn () {}, error () {} }
const queue = (): Queue => new RequestQueue({ maxInFlightRequests: 1, requestTimeout: 1000, clientId: 'test', broker: 'localhost:0', logger: quiet })

t.test('an idle queue sets no timer; a throttled or waiting one still does', async (t) => {
  const before = queue()
  before.checkPendingRequests()
  // When this fails, kafkajs mended it itself: the patch (and this test) can go.
  t.not(before.throttleCheckTimeoutId, null, 'kafkajs as shipped: an idle queue sets a timer')
  clearTimeout(before.throttleCheckTimeoutId ?? undefined)

  t.ok(quietIdleRequestQueues(), 'the guard is in place')
  t.ok(quietIdleRequestQueues(), 'once: a second call finds it')

  const idle = queue()
  idle.checkPendingRequests()
  t.equal(idle.throttleCheckTimeoutId, null, 'nothing pending, no throttle: no timer')

  const throttled = queue()
  throttled.maybeThrottle(60_000)
  throttled.pending.push({})
  throttled.scheduleCheckPendingRequests()
  t.not(throttled.throttleCheckTimeoutId, null, 'a request waiting out a throttle: checked when it ends')
  clearTimeout(throttled.throttleCheckTimeoutId ?? undefined)

  const waiting = queue()
  waiting.pending.push({})
  waiting.scheduleCheckPendingRequests()
  t.not(waiting.throttleCheckTimeoutId, null, 'a request waiting for room: checked again')
  clearTimeout(waiting.throttleCheckTimeoutId ?? undefined)
})
