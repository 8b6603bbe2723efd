import t from 'tap'
import { post, requireService, serviceToken, startServer, token, WsClient } from '../support/helper.js'
import { REDIS_URL, redisAvailable, redisClient, uniquePrefix } from '../support/redis-fixture.js'

/**
 * Many clients resuming at once on a gateway on Redis (the reconnect storm, bench/storm.ts):
 * their history reads go to Redis together and reads of one channel share a script run
 * (lib/broker/redis-read-batch.ts). Each client must still get exactly what it missed after
 * its own `since`, or `recovered: false` when the history no longer holds it all, and then
 * every live event once.
 */
const available = await redisAvailable()
const prefix = uniquePrefix('ws-resume')

// Every key under the prefix is deleted when the file's tests end.
if (available) await redisClient(t, prefix)

t.test('clients resuming at once from different positions each get exactly what they missed', async (t) => {
  if (!requireService(t, 'Redis', available)) return
  const settings = { REDIS_URL, REDIS_KEY_PREFIX: prefix, HISTORY_SIZE: 10 }
  const publisher = await startServer(t, settings)
  const gateway = await startServer(t, settings)
  const channel = `room:resume-${prefix.slice(-9, -1)}`
  const publish = async (n: number) => {
    const reply = await post(`${publisher.url}/realtime/publish`, serviceToken(), { channel, type: 'resume:test', payload: { n } })
    if (reply.status !== 202) throw new Error(`publish: HTTP ${reply.status}`)
  }
  for (let n = 1; n <= 14; n++) await publish(n)
  // History holds 5..14. Clients saw up to these offsets; 2 is trimmed away, 14 is the live edge.
  const seen = [2, 4, 6, 9, 9, 13, 14]
  const { epoch } = (await (await fetch(`${publisher.url}/realtime/history/${channel}?limit=1`, {
    headers: { authorization: `Bearer ${serviceToken()}` }
  })).json() as { position: { epoch: string } }).position
  const clients = await Promise.all(seen.map(async (_, i) => await WsClient.connect(t, gateway.wsUrl, token(`resumer-${i}`))))
  const answers = await Promise.all(clients.map(async (client, i) => await client.subscribe([channel], { [channel]: { offset: seen[i], epoch } })))
  for (let n = 15; n <= 17; n++) await publish(n)

  for (const [i, client] of clients.entries()) {
    const answer = answers[i]
    t.equal(answer.payload.positions[channel].offset, 14, `client ${i}: the position`)
    const recovered = seen[i] >= 4
    t.equal(answer.payload.recovered[channel], recovered, `client ${i} (saw ${seen[i]}): recovered ${recovered}`)
    const from = recovered ? seen[i] + 1 : 15
    const expected = Array.from({ length: 17 - from + 1 }, (_, k) => from + k)
    // One socket keeps order: once the last event is in, everything before it is too.
    await client.next((f) => f.channel === channel && f.offset === 17)
    t.same([...client.events(channel).map((f) => f.offset), 17], expected, `client ${i}: ${expected.join(',')} once each, in order`)
  }
})
