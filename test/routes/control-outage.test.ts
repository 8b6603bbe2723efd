import t, { type Test } from 'tap'
import { mintToken } from '../../lib/auth/token.js'
import { post, serviceToken, startServer, TEST_SECRET, WsClient } from '../support/helper.js'
import { eventually, OwnRedis } from '../support/redis-fixture.js'

// Disconnect and revoke when Redis hangs under the request (audit, session 26): the command
// times out (503) and may still run once Redis wakes, its message never sent. These tests
// run their own redis-server, frozen with SIGSTOP for a little longer than the broker's
// 5 s command timeout and woken before its pings give up on the connection (so no
// reconnect, and no reload of the revocations, hides what the message did not carry).

const withJti = (sub: string, jti: string) => mintToken(TEST_SECRET, { sub, ttlSeconds: 3600, jti })
/** How a connection closed, or null when it was still open after `ms`. */
const closedWithin = async (client: WsClient, ms: number) =>
  await Promise.race([client.closed, new Promise<null>((resolve) => setTimeout(() => resolve(null), ms))])

async function twoOnOwnRedis (t: Test) {
  const redis = await OwnRedis.start(t)
  const settings = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'control-outage:' }
  return { redis, a: await startServer(t, settings), b: await startServer(t, settings) }
}

t.test('a revoke that times out is enforced where it was asked at once, and reaches the other instances once Redis wakes', async (t) => {
  const { redis, a, b } = await twoOnOwnRedis(t)
  const stolen = withJti('victim', 'stolen-1')
  const onB = await WsClient.connect(t, b.wsUrl, stolen)
  const onA = await WsClient.connect(t, a.wsUrl, stolen)

  redis.pause()
  const res = await post(`${a.url}/realtime/revoke`, serviceToken(), { jti: 'stolen-1', reason: 'stolen' })
  redis.resume()
  t.equal(res.status, 503)
  t.equal(res.headers.get('retry-after'), '1')
  t.match(res.body.message, /holds on this instance and is passed on to the others once the broker answers/, 'it says what did happen')
  t.same(await closedWithin(onA, 1000), { code: 4003, reason: 'stolen' }, 'the instance that answered closed its connection')
  await t.rejects(WsClient.connect(t, a.wsUrl, stolen), /HTTP 401/, 'and refuses the token')

  // Before, the other instance never heard of it: the store ran late in Redis, its message was never sent.
  t.same(await closedWithin(onB, 8000), { code: 4003, reason: 'stolen' }, 'the other instance closes its connection once Redis answers')
  await eventually('the other instance refuses the token', async () => {
    try {
      (await WsClient.connect(t, b.wsUrl, stolen)).socket.close()
      return false
    } catch (err) {
      return /HTTP 401/.test(String(err))
    }
  })
  t.pass('the other instance refuses the token')
})

t.test('a disconnect that times out says its own instance closed them', async (t) => {
  const { redis, a } = await twoOnOwnRedis(t)
  const onA = await WsClient.connect(t, a.wsUrl, withJti('leaving', 'any'))
  redis.pause()
  const res = await post(`${a.url}/realtime/disconnect`, serviceToken(), { userId: 'leaving', reason: 'bye' })
  redis.resume()
  t.equal(res.status, 503)
  t.match(res.body.message, /connections on this instance are closed; those on other instances may not be: try again/)
  t.same(await closedWithin(onA, 1000), { code: 4003, reason: 'bye' }, 'closed on the instance that answered')
})
