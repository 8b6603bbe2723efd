import t from 'tap'
import { covers, notCoveredBy, type Revocation, RevocationList, revokes } from '../../lib/auth/revocations.js'
import { ExpiringMap } from '../../lib/broker/expiring-map.js'

const NOW = 1_800_000_000_000
const at = (seconds: number) => NOW / 1000 + seconds

t.test('a user revocation refuses tokens issued at or before it, and those without iat, until it ends', async (t) => {
  const list = new RevocationList()
  t.equal(list.isRevoked({ userId: 'u', iat: at(0) }, NOW), false, 'nothing revoked: nothing refused')
  list.apply({ kind: 'user', userId: 'u', issuedBefore: at(0), until: NOW + 60_000 })
  t.equal(list.isRevoked({ userId: 'u', iat: at(-10) }, NOW), true, 'issued before')
  t.equal(list.isRevoked({ userId: 'u', iat: at(0) }, NOW), true, 'issued at the moment')
  t.equal(list.isRevoked({ userId: 'u', iat: at(1) }, NOW), false, 'issued after')
  t.equal(list.isRevoked({ userId: 'u' }, NOW), true, 'no iat counts as before')
  t.equal(list.isRevoked({ userId: 'v', iat: at(-10) }, NOW), false, 'another user')
  t.equal(list.isRevoked({ userId: null }, NOW), false, 'no user')
  t.equal(list.isRevoked({ userId: 'u', iat: at(-10) }, NOW + 60_001), false, 'ended')
  list.apply({ kind: 'user', userId: 'u', issuedBefore: at(-100), until: NOW + 1000 })
  t.equal(list.isRevoked({ userId: 'u', iat: at(-10) }, NOW), true, 'the later moment and the longer life win')
  t.equal(list.isRevoked({ userId: 'u', iat: at(-10) }, NOW + 30_000), true)
})

t.test('a jti revocation refuses that token only', async (t) => {
  const list = new RevocationList()
  list.apply({ kind: 'jti', jti: 'j1', until: NOW + 1000 })
  t.equal(list.isRevoked({ userId: 'u', jti: 'j1', iat: at(5) }, NOW), true)
  t.equal(list.isRevoked({ userId: 'u', jti: 'j2', iat: at(5) }, NOW), false)
  t.equal(list.isRevoked({ userId: 'u', jti: 'j1' }, NOW + 1000), false, 'ended')
  t.equal(revokes({ kind: 'jti', jti: 'j1', until: 0 }, { userId: 'x', jti: 'j1' }), true)
  t.equal(revokes({ kind: 'user', userId: 'x', issuedBefore: at(0), until: 0 }, { userId: 'x', iat: at(1) }), false)
})

t.test('prune drops what ended; replace swaps the whole list', async (t) => {
  const list = new RevocationList()
  list.apply({ kind: 'jti', jti: 'old', until: NOW - 1 })
  list.apply({ kind: 'user', userId: 'old', issuedBefore: 0, until: NOW - 1 })
  list.apply({ kind: 'jti', jti: 'live', until: NOW + 1000 })
  t.equal(list.size, 3)
  list.prune(NOW)
  t.equal(list.size, 1)
  t.equal(list.isRevoked({ userId: 'x', jti: 'live' }, NOW), true, 'what is in force stays')
})

t.test('covers: the same user or jti, refusing at least as much for at least as long', async (t) => {
  const user = { kind: 'user', userId: 'u', issuedBefore: 100, until: NOW + 10 } as const
  t.ok(covers(user, user))
  t.ok(covers({ ...user, issuedBefore: 200, until: NOW + 20 }, user), 'later and longer')
  t.notOk(covers({ ...user, issuedBefore: 50 }, user), 'refuses fewer tokens')
  t.notOk(covers({ ...user, until: NOW + 5 }, user), 'ends sooner')
  t.notOk(covers({ ...user, userId: 'v' }, user), 'another user')
  const jti = { kind: 'jti', jti: 'j', until: NOW + 10 } as const
  t.ok(covers(jti, jti))
  t.notOk(covers({ ...jti, jti: 'k' }, jti))
  t.notOk(covers(jti, user))
  t.notOk(covers(user, jti))
})

t.test('notCoveredBy: what a stored list lacks or holds weaker, in one pass over tens of thousands', async (t) => {
  const held: Revocation[] = Array.from({ length: 50_000 }, (_, i) => ({ kind: 'user', userId: `u${i}`, issuedBefore: 100, until: NOW + 10 }))
  const stored: Revocation[] = held.slice(0, 49_998).concat([{ kind: 'user', userId: 'u49998', issuedBefore: 50, until: NOW + 10 }])
  const started = Date.now()
  t.same(notCoveredBy(stored, held).map((r) => (r as { userId: string }).userId), ['u49998', 'u49999'], 'a weaker one and a missing one')
  t.ok(Date.now() - started < 1000, `50 000 each way in ${Date.now() - started} ms (pairwise it took 6.6 s)`)
  t.same(notCoveredBy([{ kind: 'jti', jti: 'j', until: NOW + 10 }], [{ kind: 'jti', jti: 'j', until: NOW + 5 }]), [])
})

t.test('ExpiringMap: entries end after the TTL; sweep frees them in order', async (t) => {
  const map = new ExpiringMap<number>(1000)
  map.set('a', 1, NOW)
  map.set('b', 2, NOW + 500)
  t.equal(map.get('a', NOW + 999), 1)
  t.equal(map.get('a', NOW + 1000), undefined, 'ended at its TTL')
  t.equal(map.size, 1, 'a read of an ended entry frees it')
  map.set('c', 3, NOW + 600)
  map.set('b', 4, NOW + 700) // set again: moves to the end, lives longer
  map.sweep(NOW + 1650)
  t.same([map.get('b', NOW + 1650), map.get('c', NOW + 1650)], [4, undefined])
  t.equal(map.size, 1)
})
