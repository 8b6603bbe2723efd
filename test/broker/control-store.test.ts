import t, { type Test } from 'tap'
import type { Revocation } from '../../lib/auth/revocations.js'
import { type ControlBackend, LocalControl } from '../../lib/broker/control.js'
import { RedisControl } from '../../lib/broker/redis-control.js'
import { requireService } from '../support/helper.js'
import { redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'

// Where revocations are kept (lib/broker/control.ts, lib/broker/redis-control.ts): one per
// user or jti, merged; ended ones leave without any store reading them all.
const redisUp = await redisAvailable()

const user = (userId: string, issuedBefore: number, until: number): Revocation => ({ kind: 'user', userId, issuedBefore, until })
const byUser = (list: Revocation[]) => list.map((r) => r.kind === 'user' ? `${r.userId}:${r.issuedBefore}` : `jti:${r.jti}`).sort()

async function backends (t: Test): Promise<Array<[string, ControlBackend]>> {
  const list: Array<[string, ControlBackend]> = [['memory', new LocalControl()]]
  if (!requireService(t, 'Redis', redisUp)) return list
  const prefix = uniquePrefix('control-store')
  const redis = await redisClient(t, prefix)
  list.push(['redis', new RedisControl(redis, { revocationsKey: `${prefix}revocations`, controlChannel: `${prefix}control` }, async () => {})])
  return list
}

t.test('one revocation per user or jti: storing again merges (the later issuedBefore and the later end win)', async (t) => {
  const later = Date.now() + 3_600_000
  for (const [name, control] of await backends(t)) {
    for (let i = 0; i < 200; i++) await control.store(user('42', i % 7, later - i))
    await control.store({ kind: 'jti', jti: 'j-1', until: later })
    await control.store({ kind: 'jti', jti: 'j-1', until: later - 5 })
    const kept = await control.load()
    t.same(byUser(kept), ['42:6', 'jti:j-1'], `${name}: one each, the latest issuedBefore`)
    t.same(kept.map((r) => r.until), [later, later], `${name}: the latest end`)
  }
})

t.test('redis: ended revocations leave as others are stored, and the hash lives as long as its latest one', async (t) => {
  if (!requireService(t, 'Redis', redisUp)) return
  const prefix = uniquePrefix('control-prune')
  const redis = await redisClient(t, prefix)
  const key = `${prefix}revocations`
  const control = new RedisControl(redis, { revocationsKey: key, controlChannel: `${prefix}control` }, async () => {})
  const later = Date.now() + 3_600_000
  for (let i = 0; i < 300; i++) await control.store(user(`long-${i}`, 1, later))
  const fields = async () => (await redis.hkeys(key)).filter((k) => k !== '#cursor').length
  t.equal(await fields(), 300, 'all 300 kept while in force')
  // Ended ones (as if their end had come meanwhile): 800 fields at 32 a store, the whole
  // hash is looked at every 25 stores or so.
  for (let i = 0; i < 500; i++) await control.store(user(`ended-${i}`, 1, Date.now() - 1000))
  for (let i = 300; i < 340; i++) await control.store(user(`long-${i}`, 1, later))
  t.equal(await fields(), 340, 'the ended ones are gone: the 340 in force are left')
  t.ok(await redis.hlen(key) <= 341, 'and at most the prune cursor besides')
  t.same(byUser(await control.load()), Array.from({ length: 340 }, (_, i) => `long-${i}:1`).sort(), 'load: the ones in force')
  const ttl = await redis.pttl(key)
  t.ok(ttl > 3_500_000 && ttl <= 3_600_000, `the hash expires with its latest revocation (${ttl} ms)`)
  await control.store(user('shorter', 1, Date.now() + 1000))
  t.ok(await redis.pttl(key) > 3_500_000, 'a shorter one never brings that forward')
})
