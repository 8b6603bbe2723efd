import { test } from 'tap'
import type { RealtimeEvent } from '../../client/realtime-client.js'
import { publish, watch } from '../support/client-watch.js'
import { post, serviceToken, sleep, startServer, token } from '../support/helper.js'

/**
 * The browser client's live-state features against a real gateway, over both transports:
 * rewind, presence, the history route, stream resets, and disconnects (4003).
 */

const offsets = (events: RealtimeEvent[]) => events.map((e) => e.offset)

for (const transport of ['ws', 'sse'] as const) {
  test(`${transport}: rewind starts a channel with its last events, then live, and a reconnect resumes instead`, async (t) => {
    const { app, url } = await startServer(t)
    for (let n = 1; n <= 3; n++) {
      await publish(t, url, 'product:rw1', 'stock', { n })
      await publish(t, url, 'product:rw2', 'price', { n })
      await publish(t, url, 'product:rw3', 'price', { n })
    }
    const w = watch(t, { url, token: token('r1'), channels: ['product:rw1'], rewind: 1, transports: [transport] })
    await w.until('the current state of the first channel', () => w.on('product:rw1').length === 1)
    t.same(w.on('product:rw1').map((e) => e.payload.n), [3], 'rewind: 1 on connect is the latest event')

    await w.client.subscribe('product:rw2', { rewind: 2 })
    await w.client.subscribe('product:rw3')
    await w.until('the rewound events', () => w.on('product:rw2').length === 2)
    t.same(offsets(w.on('product:rw2')), [2, 3], 'rewind: 2 on subscribe, oldest first')

    await publish(t, url, 'product:rw1', 'stock', { n: 4 })
    await publish(t, url, 'product:rw2', 'price', { n: 4 })
    await publish(t, url, 'product:rw3', 'price', { n: 4 })
    await w.until('live events', () => w.on('product:rw3').length === 1 && w.on('product:rw2').length === 3 && w.on('product:rw1').length === 2)
    t.same(offsets(w.on('product:rw1')), [3, 4], 'no gap, no duplicate at the seam')
    t.same(offsets(w.on('product:rw3')), [4], 'a channel without rewind starts live')

    const opened = w.opens.length // over SSE, each subscribe reopened the stream
    app.hub.closeAll(1012, 'server restarting')
    await w.until('open again', () => w.opens.length === opened + 1)
    await publish(t, url, 'product:rw1', 'stock', { n: 5 })
    await w.until('the next live event', () => w.on('product:rw1').length === 3)
    t.same(offsets(w.on('product:rw1')), [3, 4, 5], 'the reconnect resumed: nothing rewound twice')
    t.same(offsets(w.on('product:rw2')), [2, 3, 4])
    t.same(w.recoveries, [], 'no recovery notice')
    t.same(w.errors, [])
  })

  test(`${transport}: presence events and presence(channel)`, async (t) => {
    const { url } = await startServer(t, { PRESENCE_INTERVAL_MS: 100 })
    const first = watch(t, { url, token: token('p1'), channels: ['product:pr'], transports: [transport] })
    await first.until('the first count', () => first.presences.some((p) => p.channel === 'product:pr'))
    const second = watch(t, { url, token: token('p2'), channels: ['product:pr'], transports: [transport] })
    await first.until('two viewers', () => first.presences.at(-1)?.connections === 2)
    t.match(first.presences.at(-1), { channel: 'product:pr', connections: 2, users: 2 })
    t.notOk(first.events.some((e) => e.type === 'presence'), 'presence is not a channel event')
    await second.until('its own count', () => second.presences.length > 0)
    t.match(await first.client.presence('product:pr'), { channel: 'product:pr', connections: 2, users: 2 })

    if (transport === 'ws') {
      await t.rejects(first.client.presence('orders'), { code: 'forbidden' }, 'presence:get of a channel it may not read')
    } else {
      // Over SSE, a channel the stream does not carry is asked over HTTP: admins and services only.
      await t.rejects(first.client.presence('product:elsewhere'), { status: 403, code: 'forbidden' })
    }
    second.client.close()
    await first.until('one viewer again', () => first.presences.at(-1)?.connections === 1)
    t.match(await first.client.presence('product:pr'), { connections: 1, users: 1 })
  })

  test(`${transport}: an event a service published with type presence is an event, not the live counts`, async (t) => {
    // Audit: the client took it for presence counts (a publisher could fake viewer numbers)
    // and the app never saw the event: a silent gap in the channel's offsets.
    const { url } = await startServer(t)
    const w = watch(t, { url, token: token('pe1'), channels: ['room:pe'], transports: [transport] })
    await w.until('open', () => w.client.state === 'open')
    await publish(t, url, 'room:pe', 'before', { n: 1 })
    await publish(t, url, 'room:pe', 'presence', { connections: 999, users: 999 })
    await publish(t, url, 'room:pe', 'after', { n: 3 })
    await w.until('three events', () => w.on('room:pe').length === 3)
    t.same(w.on('room:pe').map((e) => [e.offset, e.type]), [[1, 'before'], [2, 'presence'], [3, 'after']], 'every event, in order')
    t.notOk(w.presences.some((p) => p.connections === 999), 'no fake counts')
    t.same(w.recoveries, [])
  })

  test(`${transport}: a stream reset reaches the app as a recovery notice, and positions follow it`, async (t) => {
    const { app, url } = await startServer(t)
    const w = watch(t, { url, token: token('z1'), channels: ['product:z'], transports: [transport] })
    await w.until('open', () => w.client.state === 'open')
    await publish(t, url, 'product:z', 'stock', { n: 1 })
    await w.until('the first event', () => w.on('product:z').length === 1)

    app.hub.reset('product:z', { offset: 0, epoch: 'epoch-after-reset' })
    await w.until('the recovery notice', () => w.recoveries.length === 1)
    t.match(w.recoveries[0], { recovered: false, channels: ['product:z'], reset: true })
    await w.until('the new position', () => w.client.lastPositions()['product:z']?.epoch === 'epoch-after-reset')
    t.same(w.client.lastPositions()['product:z'], { offset: 0, epoch: 'epoch-after-reset' })
    t.equal(w.client.state, 'open', 'a reset does not cost the connection')
  })

  test(`${transport}: after a disconnect (4003) it reconnects only with a new token from its token function`, async (t) => {
    const { url } = await startServer(t)
    const first = token('d1', [], 3600)
    const second = token('d1', [], 3601) // another exp: another token
    const handed: string[] = []
    const queue = [first, second, second]
    const w = watch(t, {
      url,
      transports: [transport],
      channels: ['product:d'],
      token: () => {
        const next = queue.shift() ?? second
        handed.push(next)
        return next
      }
    })
    await w.until('open', () => w.client.state === 'open')

    const disconnect = async () => t.equal((await post(`${url}/realtime/disconnect`, serviceToken(), { userId: 'd1', reason: 'logged out' })).status, 202)
    await disconnect()
    await w.until('open with the new token', () => w.opens.length === 2)
    t.match(w.disconnects[0], { code: 4003, reason: 'logged out', willReconnect: true })
    t.same(handed, [first, second])

    await disconnect()
    await w.until('closed: the token function gave the same token again', () => w.client.state === 'closed')
    t.equal(w.disconnects.length, 2)
    await sleep(300)
    t.equal(w.opens.length, 2, 'it did not come back')
    t.equal(w.states.at(-1), 'closed')
  })

  test(`${transport}: after a disconnect (4003) a fixed token or a token function with nothing to give stops it`, async (t) => {
    const { url } = await startServer(t)
    const fixed = watch(t, { url, transports: [transport], token: token('d2') })
    let calls = 0
    const empty = watch(t, { url, transports: [transport], token: () => (++calls === 1 ? token('d3') : '') })
    const closedReasons: string[] = []
    fixed.client.on('state', (s) => { if (s.state === 'closed') closedReasons.push(s.reason) })
    empty.client.on('state', (s) => { if (s.state === 'closed') closedReasons.push(s.reason) })
    await fixed.until('open', () => fixed.client.state === 'open')
    await empty.until('open', () => empty.client.state === 'open')

    t.equal((await post(`${url}/realtime/disconnect`, serviceToken(), { userIds: ['d2', 'd3'] })).status, 202)
    await fixed.until('closed', () => fixed.client.state === 'closed')
    await empty.until('closed', () => empty.client.state === 'closed')
    t.match(fixed.disconnects, [{ code: 4003, reason: 'disconnected', willReconnect: false }])
    t.match(empty.disconnects, [{ code: 4003, willReconnect: true }])
    t.equal(calls, 2, 'the token function was asked once more')
    t.match(closedReasons.sort(), [/^disconnected: disconnected$/, /^disconnected; no new token/])
    t.notOk(fixed.states.includes('reconnecting'), 'a fixed token is never retried')
  })
}

for (const transport of ['ws', 'sse'] as const) {
  test(`${transport}: a rewind above the channel's own history size gives what it holds, as over WebSocket`, async (t) => {
    const { url } = await startServer(t, { HISTORY_POLICY: 'product:=5/86400' })
    for (let n = 1; n <= 12; n++) await publish(t, url, 'product:small', 'price', { n })
    const w = watch(t, { url, token: token('r2'), channels: ['product:small'], rewind: 20, transports: [transport] })
    await w.until('the channel\'s history', () => w.on('product:small').length === 5)
    await publish(t, url, 'product:small', 'price', { n: 13 })
    await w.until('then live', () => w.on('product:small').length === 6)
    t.same(offsets(w.on('product:small')), [8, 9, 10, 11, 12, 13], 'its 5 held events, then live (over SSE it was nothing, silently)')
    t.same(w.recoveries, [])
  })
}

test('sse: a rewind as long as the channel\'s history survives a publish between the history read and the stream', async (t) => {
  const { url } = await startServer(t, { HISTORY_POLICY: 'product:=3/86400' })
  for (let n = 1; n <= 5; n++) await publish(t, url, 'product:racy', 'price', { n })
  // The stream request waits until one more event is published (audit: the stream resumed from
  // 3 events back, which that event pushed out of the history, and the app got a recovery
  // notice instead of the state).
  let releaseStream = (): void => {}
  const streamHeld = new Promise<void>((resolve) => { releaseStream = resolve })
  let streams = 0
  const fetchImpl: typeof fetch = async (input, init) => {
    if (String(input).includes('/sse') && streams++ === 0) await streamHeld
    return await fetch(input, init)
  }
  const w = watch(t, { url, token: token('r3'), channels: ['product:racy'], rewind: 3, transports: ['sse'], fetch: fetchImpl })
  await w.until('the stream request under way', () => streams === 1)
  await publish(t, url, 'product:racy', 'price', { n: 6 })
  releaseStream()
  await w.until('the rewound events and the one published meanwhile', () => w.on('product:racy').length === 4)
  t.same(offsets(w.on('product:racy')), [3, 4, 5, 6], 'the last 3 at the read, then what came after, once each')
  t.same(w.recoveries, [], 'no recovery notice')
})

test('history over HTTP: the last events, after a position, and the channel ACL', async (t) => {
  const { url } = await startServer(t)
  for (let n = 1; n <= 3; n++) await publish(t, url, 'product:h', 'stock', { n })
  const w = watch(t, { url, token: token('h1') })

  const last = await w.client.history('product:h', { limit: 2 })
  t.match(last, { channel: 'product:h', recovered: true, position: { offset: 3, epoch: String } })
  t.same(offsets(last.events), [2, 3])
  t.match(last.events[0], { type: 'stock', channel: 'product:h', payload: { n: 2 }, ts: String })

  const after = await w.client.history('product:h', { since: 1 })
  t.same(offsets(after.events), [2, 3])
  const resumed = await w.client.history('product:h', { since: { offset: 2, epoch: last.position.epoch } })
  t.same(offsets(resumed.events), [3], 'since as a position carries its epoch')
  const otherEpoch = await w.client.history('product:h', { since: 1, epoch: 'not-this-one' })
  t.match(otherEpoch, { recovered: false, events: [] }, 'another epoch: reload instead')

  await t.rejects(w.client.history('orders'), { status: 403, code: 'forbidden' })
  await t.rejects(w.client.history('product:h', { limit: 0 }), { status: 400, code: 'bad_request' })
  const anonymous = watch(t, { url, transports: ['sse'] })
  await t.rejects(anonymous.client.history('product:h'), { status: 401, code: 'unauthorized' })
  anonymous.client.close()
})
