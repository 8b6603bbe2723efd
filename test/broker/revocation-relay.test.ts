import t from 'tap'
import type { Revocation } from '../../lib/auth/revocations.js'
import { RELAY_LIMIT, RevocationRelay } from '../../lib/broker/revocation-relay.js'

const NOW = 1_000_000
const jti = (id: string, until = NOW + 60_000): Revocation => ({ kind: 'jti', jti: id, until })
const user = (userId: string, issuedBefore: number, until = NOW + 60_000): Revocation => ({ kind: 'user', userId, issuedBefore, until })

/** A broker stand-in that takes what it is handed while `up`, and throws as an unreachable one does otherwise. */
function broker () {
  const passed: Array<{ revocation: Revocation, reason: string }> = []
  const state = { up: false, calls: 0 }
  const passOn = async (revocation: Revocation, reason: string) => {
    state.calls++
    if (!state.up) throw new Error('broker away')
    passed.push({ revocation, reason })
  }
  return { passed, state, relay: new RevocationRelay(passOn) }
}

t.test('held revocations are passed on in the order they came once the broker answers, then forgotten', async (t) => {
  const { passed, state, relay } = broker()
  t.ok(relay.hold(jti('a'), 'stolen'))
  t.ok(relay.hold(user('u1', 10), 'fired'))
  await t.rejects(relay.flush(NOW), /broker away/, 'a flush while the broker is away fails')
  t.equal(state.calls, 1, 'and stops at the first failure')
  t.equal(relay.size, 2, 'keeping everything')
  state.up = true
  await relay.flush(NOW)
  t.same(passed, [{ revocation: jti('a'), reason: 'stolen' }, { revocation: user('u1', 10), reason: 'fired' }])
  t.equal(relay.size, 0)
  await relay.flush(NOW)
  t.equal(passed.length, 2, 'nothing twice')
})

t.test('the same user or jti revoked again is merged: the later moment, the longer life, the last reason', async (t) => {
  const { passed, state, relay } = broker()
  relay.hold(user('u1', 10, NOW + 5000), 'first')
  relay.hold(user('u1', 5, NOW + 9000), 'second')
  relay.hold(jti('a', NOW + 9000), 'x')
  relay.hold(jti('a', NOW + 1000), 'y')
  t.equal(relay.size, 2)
  state.up = true
  await relay.flush(NOW)
  t.same(passed, [
    { revocation: user('u1', 10, NOW + 9000), reason: 'second' },
    { revocation: jti('a', NOW + 9000), reason: 'y' }
  ])
})

t.test('ended revocations are dropped unsent', async (t) => {
  const { passed, state, relay } = broker()
  relay.hold(jti('old', NOW - 1), 'gone')
  relay.hold(jti('live'), 'here')
  state.up = true
  await relay.flush(NOW)
  t.same(passed.map((p) => p.revocation), [jti('live')])
  t.equal(relay.size, 0)
})

t.test('one revoked again with more while it is being passed on stays for the next flush', async (t) => {
  let release = () => {}
  const passed: Revocation[] = []
  const relay = new RevocationRelay(async (revocation) => {
    passed.push(revocation)
    if (passed.length === 1) await new Promise<void>((resolve) => { release = resolve })
  })
  relay.hold(user('u1', 10), 'first')
  const flushing = relay.flush(NOW)
  const again = relay.flush(NOW)
  relay.hold(user('u1', 20), 'later')
  release()
  await Promise.all([flushing, again])
  t.same(passed, [user('u1', 10)], 'flushes do not overlap: the second waited for the first')
  t.equal(relay.size, 1, 'the later one is still held')
  await relay.flush(NOW)
  t.same(passed, [user('u1', 10), user('u1', 20)])
})

t.test(`at most ${RELAY_LIMIT} are held; one already held may still be merged`, async (t) => {
  const { relay } = broker()
  let held = 0
  for (let i = 0; i < RELAY_LIMIT; i++) if (relay.hold(jti(`j${i}`), 'r')) held++
  t.equal(held, RELAY_LIMIT)
  t.notOk(relay.hold(jti('one-too-many'), 'r'), 'full')
  t.ok(relay.hold(jti('j0', NOW + 120_000), 'r'), 'a merge takes no room')
  t.equal(relay.size, RELAY_LIMIT)
})
