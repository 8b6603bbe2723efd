import t from 'tap'
import { MAX_SUBSCRIBER_BUDGET_BYTES, SUBSCRIBER_BUDGET_BYTES, subscriberBudget, SubscriberPacing } from '../../lib/broker/subscriber-pacing.js'

/**
 * The rule of lib/broker/subscriber-pacing.ts, with the subscriber's PING answered by the
 * test: a publish waits while more than the budget of this instance's entries may be unread;
 * a PING's answer reads back everything answered before it was sent. Against a real Redis:
 * test/broker/redis-subscriber-pacing.test.ts.
 */
function pings () {
  const pending: Array<(ok: boolean) => void> = []
  let sent = 0
  return {
    ping: async (): Promise<boolean> => { sent++; return await new Promise<boolean>((resolve) => pending.push(resolve)) },
    answer: (ok = true) => { for (const resolve of pending.splice(0)) resolve(ok) },
    get sent () { return sent }
  }
}
const settled = async (p: Promise<unknown>): Promise<boolean> => {
  let done = false
  void p.then(() => { done = true })
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve))
  return done
}

t.test('under the budget a publish goes at once; over it, it waits for the PING that reads the earlier ones back', async (t) => {
  const subscriber = pings()
  const pacing = new SubscriberPacing(1000, subscriber.ping)
  await pacing.admit(400)
  t.equal(subscriber.sent, 0, 'far under the budget: no PING')
  pacing.answered(400)
  await pacing.admit(400) // 800 outstanding: past half the budget, a PING goes ahead
  t.equal(subscriber.sent, 1, 'past half the budget a PING is sent ahead')
  pacing.answered(400)
  const third = pacing.admit(400)
  t.notOk(await settled(third), '1200 would be over the budget: it waits')
  subscriber.answer() // the PING was sent after the first publish's answer only
  t.ok(await settled(third), 'the PING read the first 400 back: 400 outstanding, and 400 more fit')
  t.equal(pacing.outstandingBytes, 800)
})

t.test('what is still in flight is waited for, then measured again', async (t) => {
  const subscriber = pings()
  const pacing = new SubscriberPacing(1000, subscriber.ping)
  await pacing.admit(900) // nothing outstanding: goes, whatever its size
  const next = pacing.admit(500)
  t.notOk(await settled(next), 'waits')
  subscriber.answer() // sent before the 900 were answered: reads nothing back
  t.notOk(await settled(next), 'still waits: the 900 are in flight')
  const before = subscriber.sent
  pacing.answered(900)
  await settled(next)
  t.ok(subscriber.sent > before, 'a new PING once they are answered')
  subscriber.answer()
  t.ok(await settled(next), 'and that one reads them back')
  t.equal(pacing.outstandingBytes, 500)
})

t.test('nothing waits when no subscriber is connected, and a lost connection forgets what it held', async (t) => {
  const subscriber = pings()
  const pacing = new SubscriberPacing(1000, subscriber.ping)
  await pacing.admit(900)
  pacing.answered(900)
  const next = pacing.admit(500)
  subscriber.answer(false)
  t.ok(await settled(next), 'a subscriber that cannot answer holds nothing back')
  t.equal(pacing.outstandingBytes, 1400)
  pacing.reset()
  t.equal(pacing.outstandingBytes, 0, 'after a reconnect nothing of before is outstanding')
  const failing = new SubscriberPacing(10, async () => { throw new Error('gone') })
  await failing.admit(20)
  await failing.admit(20)
  t.pass('a PING that fails holds nothing back either')
})

t.test('the budget: half the lower of Redis\'s limits, at most 16 MiB; 4 MiB when they are not known', async (t) => {
  t.equal(subscriberBudget(undefined), SUBSCRIBER_BUDGET_BYTES, 'unknown (CONFIG not allowed): the default')
  t.equal(subscriberBudget({ hardBytes: 33554432, softBytes: 8388608, softSeconds: 60 }), 4194304, "Redis's default: half of 8 MB")
  t.equal(subscriberBudget({ hardBytes: 268435456, softBytes: 134217728, softSeconds: 60 }), MAX_SUBSCRIBER_BUDGET_BYTES, 'the recommendation: the cap')
  t.equal(subscriberBudget({ hardBytes: 1048576, softBytes: 524288, softSeconds: 2 }), 262144)
  t.equal(subscriberBudget({ hardBytes: 1048576, softBytes: 524288, softSeconds: 0 }), 524288, 'a soft limit without seconds is none')
  t.equal(subscriberBudget({ hardBytes: 0, softBytes: 0, softSeconds: 0 }), MAX_SUBSCRIBER_BUDGET_BYTES, 'no limit: the cap')
})
