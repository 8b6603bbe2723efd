import { Redis } from 'ioredis'
import type { Revocation } from '../lib/auth/revocations.js'
import { RedisControl } from '../lib/broker/redis-control.js'

/**
 * What keeping a revocation costs Redis as revocations in force pile up (POST
 * /realtime/revoke: a sale-day breach revokes users by the thousand). Stores user
 * revocations one after another through RedisControl, as the revoke route does, and reads
 * Redis's own accounting of the store script (INFO commandstats, EVALSHA/EVAL) at each step.
 *
 *   npm run bench:revocation-store -- [--steps=1000,10000,50000] [--redis=redis://127.0.0.1:6379]
 *
 * Prints, per step, the Redis µs per store (the time every other command waits behind it)
 * and the client's wall time per store. Keys under a unique prefix, deleted afterwards.
 */
const arg = (name: string, fallback: string): string =>
  process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback
const STEPS = arg('steps', '1000,10000,50000').split(',').map(Number)
const URL = arg('redis', 'redis://127.0.0.1:6379')

async function scriptStats (redis: Redis): Promise<{ calls: number, usec: number }> {
  const info = await redis.info('commandstats')
  let calls = 0
  let usec = 0
  for (const match of info.matchAll(/cmdstat_(?:evalsha|eval):calls=(\d+),usec=(\d+)/g)) {
    calls += Number(match[1])
    usec += Number(match[2])
  }
  return { calls, usec }
}

async function main (): Promise<void> {
  const prefix = `rtg-bench-revocations-${process.pid}-${Date.now()}:`
  const redis = new Redis(URL)
  const admin = new Redis(URL)
  const control = new RedisControl(redis, { revocationsKey: `${prefix}revocations`, controlChannel: `${prefix}control` }, async () => {})
  const until = Date.now() + 3_600_000
  try {
    let stored = 0
    for (const target of STEPS) {
      const from = stored
      const before = await scriptStats(admin)
      const started = performance.now()
      for (; stored < target; stored++) {
        const revocation: Revocation = { kind: 'user', userId: `user-${stored}`, issuedBefore: 1, until }
        await control.store(revocation)
      }
      const wallUs = (performance.now() - started) * 1000 / (target - from)
      const after = await scriptStats(admin)
      const redisUs = (after.usec - before.usec) / Math.max(1, after.calls - before.calls)
      console.log(`revocations ${from} → ${target}: Redis ${redisUs.toFixed(0)} µs per store, client ${wallUs.toFixed(0)} µs per store`)
    }
  } finally {
    await admin.del(`${prefix}revocations`)
    redis.disconnect()
    admin.disconnect()
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
