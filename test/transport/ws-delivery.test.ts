import t, { type Test } from 'tap'
import { post, serviceToken, startServer, token, WsClient } from '../support/helper.js'

type Frame = Record<string, any>

const publish = (url: string, channel: string, payload: Record<string, unknown> = {}) =>
  post(`${url}/realtime/publish`, serviceToken(), { channel, type: 'test:event', payload })

async function publishMany (url: string, channel: string, count: number): Promise<{ epoch: string, offsets: number[] }> {
  const offsets: number[] = []
  let epoch = ''
  for (let i = 0; i < count; i++) {
    const res = await publish(url, channel, { i })
    offsets.push(res.body.positions[channel].offset)
    epoch = res.body.positions[channel].epoch
  }
  return { epoch, offsets }
}

/** Waits for the event of `channel` at `offset`, then a ping round trip, so everything before it is in. */
async function waitUpTo (client: WsClient, channel: string, offset: number): Promise<void> {
  await client.next((f) => f.channel === channel && f.offset === offset)
  await client.request({ type: 'system:ping' })
}

/** Every frame the socket receives, in arrival order (the helper's queue hides the order of acks). */
function record (client: WsClient): Frame[] {
  const seen: Frame[] = []
  client.socket.on('message', (data) => seen.push(JSON.parse(data.toString()) as Frame))
  return seen
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)
const offsetsOf = (frames: Frame[], channel: string) => frames.filter((f) => f.channel === channel && f.offset !== undefined).map((f) => f.offset)

t.test('offsets grow by one per channel and arrive in order, even from concurrent publishes', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  const seen = record(alice)
  await alice.subscribe(['product:1', 'product:2'])
  const results = await Promise.all(range(1, 40).map((i) => publish(url, i % 2 === 0 ? 'product:1' : 'product:2', { i })))
  t.ok(results.every((r) => r.status === 202))
  await alice.next((f) => f.channel === 'product:1' && f.offset === 20)
  await alice.next((f) => f.channel === 'product:2' && f.offset === 20)
  await alice.request({ type: 'system:ping' })
  t.same(offsetsOf(seen, 'product:1'), range(1, 20))
  t.same(offsetsOf(seen, 'product:2'), range(1, 20))
  const assigned = results.map((r) => Object.values(r.body.positions as Record<string, { offset: number }>)[0].offset)
  t.same(assigned.sort((a, b) => a - b), [...range(1, 20), ...range(1, 20)].sort((a, b) => a - b), 'each offset handed out once')
})

t.test('events reach exactly the subscribed connections', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const a = await WsClient.connect(t, wsUrl, token('1'))
  const b = await WsClient.connect(t, wsUrl, token('2'))
  const both = await WsClient.connect(t, wsUrl, token('3'))
  const none = await WsClient.connect(t, wsUrl, token('4'))
  const secondTabOf1 = await WsClient.connect(t, wsUrl, token('1'))
  await a.subscribe(['product:1'])
  await b.subscribe(['product:2'])
  await both.subscribe(['product:1', 'product:2'])
  await publish(url, 'product:1', { p: 1 })
  await publish(url, 'product:2', { p: 2 })
  await post(`${url}/realtime/notify`, serviceToken(), { userId: '1', payload: { hello: 1 } })
  await Promise.all([a, b, both, none, secondTabOf1].map((c) => c.request({ type: 'system:ping' })))
  const summary = (c: WsClient) => c.events().map((e) => `${e.channel}#${e.offset}`)
  t.same(summary(a), ['product:1#1', 'user:1#1'])
  t.same(summary(b), ['product:2#1'])
  t.same(summary(both), ['product:1#1', 'product:2#1'])
  t.same(summary(none), [])
  t.same(summary(secondTabOf1), ['user:1#1'], "every connection of the user gets the user's events")
})

t.test('an unsubscribed connection stops receiving; the others go on', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const a = await WsClient.connect(t, wsUrl, token('1'))
  const b = await WsClient.connect(t, wsUrl, token('2'))
  await a.subscribe(['room:r'])
  await b.subscribe(['room:r'])
  await publish(url, 'room:r')
  await a.next((f) => f.offset === 1)
  await b.next((f) => f.offset === 1)

  await a.request({ type: 'unsubscribe', payload: { channels: ['room:r'] } })
  await publish(url, 'room:r')
  t.match(await b.next((f) => f.channel === 'room:r'), { offset: 2 }, 'the last subscriber still receives')
  await a.request({ type: 'system:ping' })
  t.same(a.events(), [], 'the one that left does not')

  await b.request({ type: 'unsubscribe', payload: { channels: ['room:r'] } })
  await publish(url, 'room:r')
  const again = await b.subscribe(['room:r'])
  t.equal(again.payload.positions['room:r'].offset, 3, 'the channel kept counting with no subscriber')
  await publish(url, 'room:r')
  t.match(await b.next((f) => f.channel === 'room:r'), { offset: 4 }, 'a new subscription after the last one left works')
  await b.request({ type: 'system:ping' })
  t.same(b.events(), [])
})

t.test('since: ack with recovered true, then the missed events in order, then live ones, once each', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const { epoch } = await publishMany(url, 'product:5', 5)
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  const seen = record(alice)
  const ack = await alice.request({ type: 'subscribe', id: 's', payload: { channels: ['product:5'], since: { 'product:5': { offset: 2, epoch } } } })
  t.same(ack.payload, { channels: ['product:5'], positions: { 'product:5': { offset: 5, epoch } }, recovered: { 'product:5': true } })
  await publishMany(url, 'product:5', 2)
  await waitUpTo(alice, 'product:5', 7)
  t.equal(seen[0].type, 'subscribed', 'the acknowledgement comes first')
  t.same(offsetsOf(seen, 'product:5'), range(3, 7))
  t.same(seen.filter((f) => f.channel === 'product:5' && f.offset !== undefined).map((f) => f.payload.i), [2, 3, 4, 0, 1], 'the same events, not copies')

  const bob = await WsClient.connect(t, wsUrl, token('43'))
  const bobSeen = record(bob)
  const noEpoch = await bob.subscribe(['product:5'], { 'product:5': { offset: 6 } })
  t.same(noEpoch.payload.recovered, { 'product:5': true }, 'without an epoch the current one is meant')
  await waitUpTo(bob, 'product:5', 7)
  t.same(offsetsOf(bobSeen, 'product:5'), [7])

  const dave = await WsClient.connect(t, wsUrl, token('45'))
  const daveSeen = record(dave)
  const twice = await dave.subscribe(['product:5', 'product:5'], { 'product:5': { offset: 5, epoch } })
  t.same(twice.payload.recovered, { 'product:5': true })
  await waitUpTo(dave, 'product:5', 7)
  t.same(offsetsOf(daveSeen, 'product:5'), [6, 7], 'a channel named twice is replayed once')

  const carol = await WsClient.connect(t, wsUrl, token('44'))
  const upToDate = await carol.subscribe(['product:5'], { 'product:5': { offset: 7, epoch } })
  t.same(upToDate.payload.recovered, { 'product:5': true }, 'nothing missed is a full recovery')
  await carol.request({ type: 'system:ping' })
  t.same(carol.events(), [])
})

/** Notifies user 42 three times (offsets 1–3) while it is away; returns its epoch and a notifier. */
async function notifyThreeTimes (url: string) {
  const notify = (n: number) => post(`${url}/realtime/notify`, serviceToken(), { userId: '42', payload: { n } })
  const first = await notify(1)
  await notify(2)
  await notify(3)
  return { notify, epoch: first.body.positions['user:42'].epoch as string }
}

t.test("since for the user's own channel (held from connect) resumes it", async (t) => {
  const { url, wsUrl } = await startServer(t)
  const { notify, epoch } = await notifyThreeTimes(url)
  // The client saw offset 1 before it went away; it reconnects and asks for the rest.
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  const seen = record(alice)
  const ack = await alice.subscribe(['user:42'], { 'user:42': { offset: 1, epoch } })
  t.same(ack.payload.recovered, { 'user:42': true })
  t.same(ack.payload.positions, { 'user:42': { offset: 3, epoch } })
  await notify(4)
  await waitUpTo(alice, 'user:42', 4)
  t.same(offsetsOf(seen, 'user:42'), [2, 3, 4], 'missed, then live, once each')

  const bob = await WsClient.connect(t, wsUrl, token('42'))
  const bobSeen = record(bob)
  const lost = await bob.subscribe(['user:42'], { 'user:42': { offset: 1, epoch: 'old-epoch' } })
  t.same(lost.payload.recovered, { 'user:42': false }, 'an honest refusal, not a silent success')
  await notify(5)
  await waitUpTo(bob, 'user:42', 5)
  t.same(offsetsOf(bobSeen, 'user:42'), [5], 'no replay, and the channel stays live')
})

/** The channel's events and resets in arrival order: offsets, and `reset@<offset>`. */
const streamOf = (frames: Frame[], channel: string) => frames
  .filter((f) => f.channel === channel && (f.offset !== undefined || f.type === 'system:reset'))
  .map((f) => f.type === 'system:reset' ? `reset@${f.payload.position.offset as number}` : f.offset)

t.test('resuming a held channel from before an event it was sent live: a reset first, then everything after since; never backwards unannounced', async (t) => {
  const { url, wsUrl } = await startServer(t, { HISTORY_SIZE: 3 })
  const { notify, epoch } = await notifyThreeTimes(url)
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  const seen = record(alice)
  await notify(4) // reaches alice live, before she asks to resume
  await waitUpTo(alice, 'user:42', 4)
  // Naming the held channel again without `since` changes nothing about what was sent.
  const plain = await alice.subscribe(['user:42'])
  t.same(plain.payload.positions, { 'user:42': { offset: 4, epoch } })
  const ack = await alice.subscribe(['user:42'], { 'user:42': { offset: 1, epoch } })
  t.same(ack.payload.recovered, { 'user:42': true })
  await notify(5)
  await waitUpTo(alice, 'user:42', 5)
  t.same(streamOf(seen, 'user:42'), [4, 'reset@1', 2, 3, 4, 5],
    'the missed events come after a reset to since (4 had gone out: 2 after it would go backwards), then live')
  const reset = seen.find((f) => f.type === 'system:reset')
  t.same(reset?.payload.position, { offset: 1, epoch }, 'the reset names the position the client resumed from')

  // Resuming from a position it got live needs no history at all, even trimmed history.
  for (let n = 6; n <= 10; n++) await notify(n)
  await waitUpTo(alice, 'user:42', 10)
  const again = await alice.subscribe(['user:42'], { 'user:42': { offset: 8, epoch } })
  t.same(again.payload.recovered, { 'user:42': true }, 'everything after 8 already went out live')
  await notify(11)
  await waitUpTo(alice, 'user:42', 11)
  t.same(streamOf(seen, 'user:42'), [4, 'reset@1', 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 'no more resets, no repeats')
})

t.test('since that the server can no longer honour: recovered false and no replay', async (t) => {
  const { url, wsUrl } = await startServer(t, { HISTORY_SIZE: 3 })
  const { epoch } = await publishMany(url, 'product:9', 10)
  const alice = await WsClient.connect(t, wsUrl, token('42'))
  const cases: Array<[string, { offset: number, epoch?: string }]> = [
    ['another epoch', { offset: 8, epoch: 'not-the-epoch' }],
    ['trimmed history', { offset: 2, epoch }],
    ['one before the oldest held', { offset: 6, epoch }],
    ['a position from the future', { offset: 11, epoch }]
  ]
  for (const [what, since] of cases) {
    const ack = await alice.subscribe(['product:9'], { 'product:9': since })
    t.same(ack.payload.recovered, { 'product:9': false }, what)
    t.same(ack.payload.positions['product:9'], { offset: 10, epoch }, `${what}: the position to reload from`)
    await alice.request({ type: 'system:ping' })
    t.same(alice.events(), [], `${what}: nothing replayed`)
    await alice.request({ type: 'unsubscribe', payload: { channels: ['product:9'] } })
  }
  const seen = record(alice)
  const ack = await alice.subscribe(['product:9'], { 'product:9': { offset: 7, epoch } })
  t.same(ack.payload.recovered, { 'product:9': true }, 'the last HISTORY_SIZE events are still there')
  await waitUpTo(alice, 'product:9', 10)
  t.same(offsetsOf(seen, 'product:9'), [8, 9, 10])
  alice.frames.splice(0)
  await publish(url, 'product:9')
  t.match(await alice.next((f) => f.channel === 'product:9'), { offset: 11 }, 'live events flow after a refused recovery')
})

async function raceOnce (t: Test, url: string, wsUrl: string, channel: string, subscribeAfter: number): Promise<number> {
  const { epoch } = await publishMany(url, channel, 10)
  const client = await WsClient.connect(t, wsUrl, token(`racer-${channel}`))
  const seen = record(client)
  // Four publishers keep requests in flight before, during and after the subscription is set up.
  let started = 0
  let done = 0
  let reached: () => void = () => {}
  const trigger = new Promise<void>((resolve) => { reached = resolve })
  const worker = async () => {
    while (started < 60) {
      started++
      await publish(url, channel, { n: started })
      if (++done >= subscribeAfter) reached()
    }
  }
  const publishers = Promise.all([worker(), worker(), worker(), worker()])
  await trigger
  const ack = await client.subscribe([channel], { [channel]: { offset: 5, epoch } })
  t.same(ack.payload.recovered, { [channel]: true })
  const at = ack.payload.positions[channel].offset
  await publishers
  await waitUpTo(client, channel, 70)
  t.same(offsetsOf(seen, channel), range(6, 70), `${channel}: every offset after 5 exactly once, in order (subscribed at ${at})`)
  client.close()
  return at
}

t.test('publishes racing a subscribe with since: nothing lost, nothing doubled', async (t) => {
  const { url, wsUrl } = await startServer(t)
  const positions: number[] = []
  for (const after of [1, 10, 25, 40]) positions.push(await raceOnce(t, url, wsUrl, `event:race-${after}`, after))
  t.ok(positions.some((p) => p > 10 && p < 70), `some subscription landed mid-stream: ${positions.join(', ')}`)
})
