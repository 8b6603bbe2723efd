import t from 'tap'
import type { WsSession } from '../../lib/transport/ws-session.js'
import { rawSocketOf } from '../../lib/transport/internals.js'
import { startServer, token, WsClient } from '../support/helper.js'

// lib/ keeps no process-wide state: write batching (lib/core/write-batch.ts) and token
// expiry (lib/auth/expiry.ts) belong to each app. Two apps in one process (tests, an
// embedding host, a blue/green swap) must not cork, flush or expire each other's sockets.

/** The server side of an app's only WebSocket. */
function onlySession (app: Awaited<ReturnType<typeof startServer>>['app']): WsSession {
  const sessions = [...app.hub.connections()]
  if (sessions.length !== 1) throw new Error(`expected one connection, found ${sessions.length}`)
  return sessions[0] as WsSession
}

t.test('a burst on one app does not cork the other app\'s sockets', async (t) => {
  const a = await startServer(t)
  const b = await startServer(t)
  t.not(a.app.hub.writeBatch, b.app.hub.writeBatch)
  const alice = await WsClient.connect(t, a.wsUrl, token('alice'))
  const bob = await WsClient.connect(t, b.wsUrl, token('bob'))
  const rawA = rawSocketOf(onlySession(a.app).socket)
  const rawB = rawSocketOf(onlySession(b.app).socket)
  if (rawA === undefined || rawB === undefined) throw new Error('no TCP socket under the WebSockets')

  // A first frame each: their own channels deliver at once from then on (ws-session.ts,
  // holdOwnChannels). Then wait for that turn to end, so each app starts from a quiet turn.
  await alice.request({ type: 'system:ping' })
  await bob.request({ type: 'system:ping' })
  await new Promise((resolve) => setTimeout(resolve, 50))
  const corked: Record<string, number> = {}
  let published: Promise<unknown> = Promise.resolve()
  a.app.hub.writeBatch.inBurst(() => {
    // The memory broker delivers synchronously: inside A's burst, A's socket is corked …
    published = a.app.hub.broker.publish({ channel: 'user:alice', type: 'a', payload: {} })
    corked.a = rawA.writableCorked
    // … and a lone event on B, published in the same turn, leaves B's socket at once.
    t.equal(b.app.hub.writeBatch.batchesFirstFrame(), false, 'B is not in A\'s burst')
    published = Promise.all([published, b.app.hub.broker.publish({ channel: 'user:bob', type: 'b', payload: {} })])
    corked.b = rawB.writableCorked
  })
  await published
  t.same(corked, { a: 1, b: 0 })
  t.equal(rawA.writableCorked, 0, 'A\'s burst flushed A\'s socket')
  t.match(await alice.next((f) => f.type === 'a'), { channel: 'user:alice' })
  t.match(await bob.next((f) => f.type === 'b'), { channel: 'user:bob' })
})

t.test('token expiry is per app: closing one app does not cancel the other\'s expiries', async (t) => {
  const a = await startServer(t)
  const b = await startServer(t)
  t.not(a.app.expiries, b.app.expiries)
  // A token that expires about a second from now on A; a long one on B.
  const shortLived = await WsClient.connect(t, a.wsUrl, token('alice', [], 1))
  await WsClient.connect(t, b.wsUrl, token('bob', [], 3600))
  await WsClient.connect(t, b.wsUrl, token('carol', [], 3600))
  t.equal(a.app.expiries.size, 1, 'A watches its own connection only')
  t.equal(b.app.expiries.size, 2, 'B watches its own two')
  await b.app.close()
  t.equal(b.app.expiries.size, 0)
  t.equal(a.app.expiries.size, 1, 'closing B left A\'s expiry in place')
  const closed = await shortLived.closed
  t.equal(closed.code, 4001, 'A\'s connection still ends when its token does')
})
