import t from 'tap'
import { NodeRegistry } from '../../lib/ops/node-registry.js'
import { requireService, sleep } from '../support/helper.js'
import { redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'

const available = await redisAvailable()

// The stats' channel count (lib/ops/node-registry.ts): PUBSUB CHANNELS holds Redis while it
// lists every channel, so however many stats requests come, on however many instances, it
// runs once per max age; here the count itself is a function that counts its calls.
t.test('the channel count is made once per max age, shared by every instance and every request meanwhile', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const prefix = uniquePrefix('registry')
  const redis = await redisClient(t, prefix)
  let counted = 0
  let channels = 7
  const countChannels = async () => { counted++; await sleep(20); return channels }
  const options = { keyPrefix: prefix, countChannels, ttlMs: 6000, channelsMaxAgeMs: 60_000 }
  const a = new NodeRegistry(redis, options)
  const b = new NodeRegistry(redis, options)

  const answers = await Promise.all(Array.from({ length: 20 }, async () => await a.distinctChannels()))
  t.same(new Set(answers), new Set([7]))
  t.equal(counted, 1, 'twenty requests at once on one instance: one count')
  t.equal(await b.distinctChannels(), 7, 'another instance reads the count made')
  t.equal(counted, 1)

  channels = 9
  t.equal(await a.distinctChannels(), 7, 'within the max age the count stands')
  t.ok(await redis.pttl(`${prefix}channel-count`) > 50_000, 'kept for the max age')
  await redis.del(`${prefix}channel-count`) // the max age, passed
  t.equal(await b.distinctChannels(), 9, 'past it, counted again')
  t.equal(counted, 2)
})

t.test('a count that fails is not kept: the next request counts again', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const prefix = uniquePrefix('registry')
  const redis = await redisClient(t, prefix)
  let fail = true
  const registry = new NodeRegistry(redis, {
    keyPrefix: prefix,
    ttlMs: 6000,
    channelsMaxAgeMs: 60_000,
    countChannels: async () => { if (fail) throw new Error('no answer'); return 3 }
  })
  await t.rejects(registry.distinctChannels(), /no answer/)
  fail = false
  t.equal(await registry.distinctChannels(), 3)
})
