import t from 'tap'
import { mintToken } from '../../lib/auth/token.js'
import { MAX_CACHED_TOKEN_LENGTH, VerifiedTokenCache } from '../../lib/auth/token-cache.js'
import { buildTestApp, TEST_SECRET, token } from '../support/helper.js'

const NOW = 1_800_000_000_000
const identity = (userId: string, exp?: number) => ({ userId, roles: [], exp })

t.test('a cached token is found until its exp, then missed and dropped', async (t) => {
  const cache = new VerifiedTokenCache(10)
  cache.set('a', identity('u1', NOW / 1000 + 60))
  cache.set('forever', identity('u2'))
  t.same(cache.get('a', NOW)?.userId, 'u1')
  t.equal(cache.get('a', NOW + 59_999)?.userId, 'u1', 'just before exp')
  t.equal(cache.get('a', NOW + 60_000), undefined, 'at exp: the full verification decides again')
  t.equal(cache.size, 1, 'the expired entry is gone')
  t.equal(cache.get('forever', NOW + 1e12)?.userId, 'u2', 'a token without exp stays')
  t.equal(cache.get('unknown', NOW), undefined)
})

t.test('bounded: the least recently used entry leaves when full', async (t) => {
  const cache = new VerifiedTokenCache(3)
  for (const k of ['a', 'b', 'c']) cache.set(k, identity(k))
  t.ok(cache.get('a', NOW), 'a used: b is now the oldest')
  cache.set('d', identity('d'))
  t.equal(cache.size, 3)
  t.equal(cache.get('b', NOW), undefined, 'b left')
  for (const k of ['a', 'c', 'd']) t.ok(cache.get(k, NOW), `${k} kept`)
  cache.set('d', identity('d2'))
  t.equal(cache.size, 3, 'setting a key again does not grow the cache')
  t.equal(cache.get('d', NOW)?.userId, 'd2')
  const none = new VerifiedTokenCache(0)
  none.set('a', identity('a'))
  t.equal(none.size, 0, 'size 0 caches nothing')
})

t.test('not kept: a token longer than the bound, or one already past its exp', async (t) => {
  const cache = new VerifiedTokenCache(10)
  const long = 'x'.repeat(MAX_CACHED_TOKEN_LENGTH + 1)
  cache.set(long, identity('long'), NOW)
  t.equal(cache.get(long, NOW), undefined, 'a token over the bound is verified every time')
  const atBound = 'y'.repeat(MAX_CACHED_TOKEN_LENGTH)
  cache.set(atBound, identity('bound'), NOW)
  t.equal(cache.get(atBound, NOW)?.userId, 'bound', 'a token at the bound is kept')
  cache.set('late', identity('late', NOW / 1000 - 0.5), NOW)
  t.equal(cache.size, 1, 'a token inside the clock tolerance after its exp is not kept')
})

t.test('through the app: a cached identity is frozen, so no caller can change what another sees', async (t) => {
  const app = await buildTestApp(t)
  const jwt = mintToken(TEST_SECRET, { sub: 'frozen-1', roles: ['x'], ttlSeconds: 60 })
  const first = app.verifyToken(jwt)
  t.ok(Object.isFrozen(first) && Object.isFrozen(first.roles), 'identity and roles frozen')
  t.throws(() => { (first.roles as string[]).push('admin') }, TypeError)
  t.throws(() => { (first as { userId: string | null }).userId = 'someone-else' }, TypeError)
  t.same(app.verifyToken(jwt).roles, ['x'], 'the next use of the token sees the roles it was signed with')
  t.equal(app.verifyToken(jwt).userId, 'frozen-1')
})

t.test('through the app: a cached token is still refused once revoked or expired', async (t) => {
  const app = await buildTestApp(t)
  const jwt = token('cached-1')
  t.equal(app.verifyToken(jwt).userId, 'cached-1')
  t.equal(app.verifyToken(jwt).userId, 'cached-1', 'verified again (from the cache)')
  app.revocations.apply({ kind: 'user', userId: 'cached-1', issuedBefore: Math.floor(Date.now() / 1000) + 1, until: Date.now() + 60_000 })
  t.throws(() => app.verifyToken(jwt), /revoked/, 'revoked after it was cached: refused')
  const other = token('cached-2')
  t.equal(app.verifyToken(other).userId, 'cached-2', 'another user is unaffected')

  // exp one second ahead, as verified once: after exp and the clock tolerance it is refused.
  const short = mintToken(TEST_SECRET, { sub: 'cached-3', ttlSeconds: 1 })
  t.equal(app.verifyToken(short).userId, 'cached-3')
  await new Promise((resolve) => setTimeout(resolve, 3200))
  t.throws(() => app.verifyToken(short), { code: 'FAST_JWT_EXPIRED' }, 'expired after it was cached: refused')
  const res = await app.inject({ method: 'GET', url: '/realtime/history/user:cached-3', headers: { authorization: `Bearer ${short}` } })
  t.equal(res.statusCode, 401)
  t.match(res.json(), { message: /expired/ })
})
