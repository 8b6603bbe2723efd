import t from 'tap'
import fc from 'fast-check'
import { type PresenceShare, totalsOf } from '../../lib/core/presence.js'
import { PresenceTally } from '../../lib/hub/presence-tally.js'

// The tally keeps presence counts incrementally (O(1) to read); it must always equal the
// counts recomputed from scratch over the local connections and the other instances' shares.
type Op =
  | { kind: 'join', user: string | null }
  | { kind: 'leave', index: number }
  | { kind: 'share', node: string, users: string[], connections: number }
  | { kind: 'drop', node: string }

const user = fc.constantFrom('u1', 'u2', 'u3', 'u4', null)
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('join' as const), user }),
  fc.record({ kind: fc.constant('leave' as const), index: fc.nat(20) }),
  fc.record({
    kind: fc.constant('share' as const),
    node: fc.constantFrom('a', 'b', 'c'),
    users: fc.uniqueArray(fc.constantFrom('u1', 'u2', 'u3', 'u5'), { maxLength: 4 }),
    connections: fc.nat(5)
  }),
  fc.record({ kind: fc.constant('drop' as const), node: fc.constantFrom('a', 'b', 'c') })
)

t.test('the tally equals the counts recomputed from scratch, after any sequence of changes', async (t) => {
  fc.assert(fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
    const tally = new PresenceTally()
    const local: Array<string | null> = []
    const remote = new Map<string, PresenceShare>()
    for (const o of ops) {
      if (o.kind === 'join') {
        tally.join(o.user)
        local.push(o.user)
      } else if (o.kind === 'leave') {
        if (local.length === 0) continue
        const [gone] = local.splice(o.index % local.length, 1)
        tally.leave(gone)
      } else if (o.kind === 'share') {
        const share = { connections: Math.max(o.connections, o.users.length), userIds: [...o.users].sort() }
        const old = remote.get(o.node)
        if (old !== undefined) tally.removeShare(old)
        remote.set(o.node, share)
        tally.addShare(share)
      } else {
        const old = remote.get(o.node)
        if (old !== undefined) tally.removeShare(old)
        remote.delete(o.node)
      }
      const localUsers = [...new Set(local.filter((u): u is string => u !== null))].sort()
      const expected = totalsOf([{ connections: local.length, userIds: localUsers }, ...remote.values()])
      const got = tally.counts()
      if (got.connections !== expected.connections || got.users !== expected.users) return false
      if (JSON.stringify(tally.localShare()) !== JSON.stringify({ connections: local.length, userIds: localUsers })) return false
    }
    return true
  }), { numRuns: 500 })
  t.pass('500 random sequences of joins, leaves and remote shares')
})

t.test('a user on two instances and twice here counts once; anonymous connections count as connections only', async (t) => {
  const tally = new PresenceTally()
  tally.join('u1')
  tally.join('u1')
  tally.join(null)
  tally.addShare({ connections: 2, userIds: ['u1', 'u2'] })
  t.same(tally.counts(), { connections: 5, users: 2 })
  tally.leave('u1')
  t.same(tally.counts(), { connections: 4, users: 2 })
  tally.leave('u1')
  tally.removeShare({ connections: 2, userIds: ['u1', 'u2'] })
  t.same(tally.counts(), { connections: 1, users: 0 })
  t.same(tally.localShare(), { connections: 1, userIds: [] })
})
