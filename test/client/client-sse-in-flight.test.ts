import { test } from 'tap'
import { CloseCode } from '../../lib/core/errors.js'
import { publish, watch } from '../support/client-watch.js'
import { startServer, token } from '../support/helper.js'
import type { RealtimeEvent } from '../../client/realtime-client.js'

const offsets = (events: RealtimeEvent[]) => events.map((e) => e.offset)

// The browser client over SSE, when the app changes its channels while a stream's request is
// under way (audit, session 26): the stream's URL, and so its channel list, was fixed when the
// request left. A channel subscribed then stayed dark (its events lost without a word), and one
// unsubscribed stayed on the stream.

/** fetch, but while `hold()` is in force a stream request waits before it leaves (the client sees it under way). */
function gatedFetch () {
  let gate: Promise<void> = Promise.resolve()
  let release = (): void => {}
  const state = { waiting: 0 }
  const fetchImpl: typeof fetch = async (input, init) => {
    if (String(input).includes('/sse')) {
      state.waiting++
      await gate
      state.waiting--
    }
    return await fetch(input, init)
  }
  return {
    fetchImpl,
    state,
    hold () { gate = new Promise((resolve) => { release = resolve }) },
    release: () => release()
  }
}

test('subscribe and unsubscribe while an SSE stream is being opened take effect on the stream that opens', async (t) => {
  const { app, url } = await startServer(t)
  const gated = gatedFetch()
  const w = watch(t, { url, token: token('in-flight'), channels: ['product:old'], transports: ['sse'], fetch: gated.fetchImpl })
  await w.until('open', () => w.client.state === 'open')

  // The stream ends (as on a restart) and the client's next request waits, under way.
  gated.hold()
  app.hub.closeWhere((identity) => identity.userId === 'in-flight', CloseCode.SERVICE_RESTART, 'restart')
  await w.until('the next stream request under way', () => gated.state.waiting === 1)
  const subscribed = w.client.subscribe('product:new')
  const unsubscribed = w.client.unsubscribe('product:old')
  gated.release()
  await Promise.all([subscribed, unsubscribed])
  await w.until('open again', () => w.opens.length === 2 && w.client.state === 'open')
  t.same(w.opens[1].channels, ['user:in-flight', 'product:new'], 'open lists what the app asked for')

  await publish(t, url, 'product:old', 'price', { n: 1 })
  await publish(t, url, 'product:new', 'price', { n: 2 })
  await w.until('the new channel\'s event', () => w.on('product:new').length === 1)
  t.same(w.on('product:new').map((e) => e.payload), [{ n: 2 }], 'the channel subscribed meanwhile is live')
  t.same(w.on('product:old'), [], 'the one unsubscribed meanwhile is gone')
  t.notOk(Object.keys(w.client.lastPositions()).includes('product:old'), 'and holds no position')
  t.same(w.recoveries, [], 'nothing lost: no recovery')
})

test('a resume that lost something, on a stream opened with an older channel list, is still told', async (t) => {
  const { app, url } = await startServer(t, { HISTORY_SIZE: 2 })
  const gated = gatedFetch()
  const w = watch(t, { url, token: token('in-flight-2'), channels: ['product:kept'], transports: ['sse'], fetch: gated.fetchImpl })
  await w.until('open', () => w.client.state === 'open')
  await publish(t, url, 'product:kept', 'price', { n: 1 })
  await w.until('the first event', () => w.on('product:kept').length === 1)

  gated.hold()
  app.hub.closeWhere((identity) => identity.userId === 'in-flight-2', CloseCode.SERVICE_RESTART, 'restart')
  await w.until('the next stream request under way', () => gated.state.waiting === 1)
  // More than the history holds, while the client is away: its resume cannot be whole.
  for (let n = 2; n <= 5; n++) await publish(t, url, 'product:kept', 'price', { n })
  void w.client.subscribe('product:added')
  gated.release()
  await w.until('open again', () => w.opens.length === 2 && w.client.state === 'open')
  await w.until('a recovery', () => w.recoveries.length > 0)
  t.match(w.recoveries[0], { recovered: false }, 'the gap is told, not skipped by the stream opened again')
})

test('a subscribe the stream then refuses (403, or 400 past the channel limit) rejects alone; the client stays open', async (t) => {
  const { app, url } = await startServer(t, { MAX_CHANNELS_PER_CONNECTION: 3 })
  const gated = gatedFetch()
  const w = watch(t, { url, token: token('in-flight-3'), channels: ['product:a'], transports: ['sse'], fetch: gated.fetchImpl })
  await w.until('open', () => w.client.state === 'open')

  const restartWhileHeld = async () => {
    gated.hold()
    app.hub.closeWhere((identity) => identity.userId === 'in-flight-3', CloseCode.SERVICE_RESTART, 'restart')
    await w.until('the next stream request under way', () => gated.state.waiting === 1)
  }
  await restartWhileHeld()
  const forbidden = w.client.subscribe('admin')
  gated.release()
  await t.rejects(forbidden, { code: 'forbidden' }, 'a channel it may not read: that subscribe rejects')
  await w.until('open again', () => w.client.state === 'open' && w.opens.length >= 2)

  await restartWhileHeld()
  const tooMany = w.client.subscribe(['product:b', 'product:c'])
  gated.release()
  await t.rejects(tooMany, { code: 'bad_request' }, 'past the channel limit: that subscribe rejects')
  await w.until('open again', () => w.client.state === 'open' && w.opens.length >= 3, 5000)
  t.same(w.opens.at(-1)?.channels, ['user:in-flight-3', 'product:a'], 'with the channels it had')
  await publish(t, url, 'product:a', 'price', { n: 1 })
  await w.until('an event on the channel kept', () => w.on('product:a').length === 1)
})

test('rewinds over SSE: one asked while the history is read is read too; a failed attempt reads them again', async (t) => {
  const { url } = await startServer(t, { HISTORY_POLICY: 'product:=2/86400' })
  for (let n = 1; n <= 3; n++) {
    await publish(t, url, 'product:ra', 'price', { n })
    await publish(t, url, 'product:rb', 'price', { n })
  }
  // Holds the first history read; the first stream request fails after four more events,
  // which leave what was read of product:ra out of its history of 2.
  let releaseRead = (): void => {}
  const readHeld = new Promise<void>((resolve) => { releaseRead = resolve })
  let reads = 0
  let streams = 0
  const fetchImpl: typeof fetch = async (input, init) => {
    if (String(input).includes('/realtime/history/') && reads++ === 0) await readHeld
    if (String(input).includes('/sse') && streams++ === 0) {
      for (let n = 4; n <= 7; n++) await publish(t, url, 'product:ra', 'price', { n })
      throw new TypeError('network down')
    }
    return await fetch(input, init)
  }
  const w = watch(t, { url, token: token('in-flight-4'), channels: ['product:ra'], rewind: 2, transports: ['sse'], fetch: fetchImpl })
  await w.until('the first history read under way', () => reads === 1)
  const added = w.client.subscribe('product:rb', { rewind: 1 })
  releaseRead()
  await added
  await w.until('open', () => w.client.state === 'open')
  await w.until('the rewound events', () => w.on('product:ra').length === 2 && w.on('product:rb').length === 1)
  t.same(offsets(w.on('product:ra')), [6, 7], 'read again after the failed attempt: the last 2 now')
  t.same(offsets(w.on('product:rb')), [3], 'the channel subscribed during the read was rewound too')
  t.same(w.recoveries, [], 'no recovery notice')
})

test('rewinds over SSE: unsubscribed and subscribed again with a rewind while the stream opens (a UI effect re-run)', async (t) => {
  const { url } = await startServer(t)
  for (let n = 1; n <= 3; n++) await publish(t, url, 'product:rr', 'price', { n })
  const gated = gatedFetch()
  gated.hold()
  const w = watch(t, { url, token: token('in-flight-6'), channels: ['product:rr'], rewind: 2, transports: ['sse'], fetch: gated.fetchImpl })
  await w.until('the stream request under way', () => gated.state.waiting === 1)
  void w.client.unsubscribe('product:rr')
  const again = w.client.subscribe('product:rr', { rewind: 2 })
  gated.release()
  await again
  await w.until('the rewound events', () => w.on('product:rr').length === 2)
  t.same(offsets(w.on('product:rr')), [2, 3], 'the rewind asked again is shown')
  await publish(t, url, 'product:rr', 'price', { n: 4 })
  await w.until('then live', () => w.on('product:rr').length === 3)
  t.same(offsets(w.on('product:rr')), [2, 3, 4])
  t.same(w.recoveries, [])
})

test('a rewind that is not a whole number of at least 1 is refused by the client, over either transport', async (t) => {
  const { url } = await startServer(t)
  for (const transport of ['ws', 'sse'] as const) {
    const w = watch(t, { url, token: token('in-flight-5'), transports: [transport] })
    await w.until('open', () => w.client.state === 'open')
    for (const rewind of [0, -2, 1.5, Number.NaN]) {
      await t.rejects(w.client.subscribe('product:bad-rewind', { rewind }), { code: 'bad_request', message: /^rewind: / }, `${transport}: rewind ${rewind}`)
    }
  }
  t.throws(() => watch(t, { url, token: token('in-flight-5'), channels: ['product:x'], rewind: 0 }), /connect: rewind: must be an integer of at least 1/)
})

test('a history read for a rewind that never answers does not keep the client connecting: the channel starts live', async (t) => {
  const { url } = await startServer(t)
  const fetchImpl: typeof fetch = async (input, init) => {
    if (!String(input).includes('/realtime/history/')) return await fetch(input, init)
    // Answers nothing, ever: only an abort ends it.
    return await new Promise<Response>((_resolve, reject) => {
      init?.signal?.addEventListener('abort', () => reject(init.signal?.reason))
    })
  }
  const w = watch(t, { url, token: token('in-flight-7'), channels: ['product:hung'], rewind: 1, transports: ['sse'], fetch: fetchImpl, connectTimeoutMs: 500 })
  await w.until('open', () => w.client.state === 'open', 3000)
  await publish(t, url, 'product:hung', 'price', { n: 1 })
  await w.until('a live event', () => w.on('product:hung').length === 1)
  t.same(offsets(w.on('product:hung')), [1])
})
