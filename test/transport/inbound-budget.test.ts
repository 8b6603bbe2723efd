import t from 'tap'
import { startServer, token, WsClient } from '../support/helper.js'

// The bytes a user's WebSocket frames may bring per second, across its connections
// (WS_INBOUND_BYTES_PER_SECOND / WS_INBOUND_BYTES_BURST, lib/transport/user-budget.ts).
const padded = (id: string, bytes: number) => JSON.stringify({ type: 'system:ping', id, pad: 'x'.repeat(bytes) })

t.test('past its bytes budget a user\'s frames get rate_limited, unparsed, on every connection of it; other users go on', async (t) => {
  const { wsUrl } = await startServer(t, { WS_INBOUND_BYTES_PER_SECOND: 1000, WS_INBOUND_BYTES_BURST: 100_000, WS_MAX_PAYLOAD_BYTES: 64 * 1024 })
  const first = await WsClient.connect(t, wsUrl, token('heavy'))
  const second = await WsClient.connect(t, wsUrl, token('heavy'))
  const other = await WsClient.connect(t, wsUrl, token('light'))

  const answer = async (client: WsClient, frame: string) => {
    client.send(frame)
    return await client.next((f) => f.type === 'system:pong' || f.type === 'error')
  }
  t.match(await answer(first, padded('a', 40_000)), { type: 'system:pong', id: 'a' }, '40 KB: within the burst')
  t.match(await answer(first, padded('b', 40_000)), { type: 'system:pong', id: 'b' }, '80 KB: within the burst')
  const refused = await answer(first, padded('c', 40_000))
  t.match(refused, { type: 'error', payload: { code: 'rate_limited' } }, '120 KB: past it')
  t.equal(refused.id, undefined, 'a large refused frame is not parsed, not even for its id')
  t.match(await answer(second, padded('d', 40_000)), { type: 'error', payload: { code: 'rate_limited' } }, 'the same user on another connection: the same budget')
  t.match(await answer(second, JSON.stringify({ type: 'system:ping', id: 'small' })), { type: 'system:pong', id: 'small' }, 'what is left still takes a small frame')
  t.match(await answer(other, padded('e', 40_000)), { type: 'system:pong', id: 'e' }, 'another user has its own')
})
