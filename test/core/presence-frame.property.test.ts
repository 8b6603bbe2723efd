import t from 'tap'
import fc from 'fast-check'
import { EncodedPresence } from '../../lib/core/presence.js'
import { serverFrame } from '../../lib/transport/protocol.js'

const NUM_RUNS = 500
const channel = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9_\-:.@]{1,200}$/),
  fc.string({ unit: 'binary', maxLength: 300 }), // whatever the name (and past 125 bytes: a longer header), the frame stays valid JSON
  fc.constantFrom('"', '\\', '\u2028', '\ud800', 'product:"}')
)
const counts = fc.record({ connections: fc.nat(), users: fc.nat() })

/** The payload of one unmasked, final text frame (RFC 6455 §5.2), read here apart from the code that builds it. */
function readFrame (frame: Buffer): string {
  if (frame[0] !== 0x81) throw new Error(`not a final text frame: ${frame[0]}`)
  if ((frame[1] & 0x80) !== 0) throw new Error('a server frame must not be masked')
  let length = frame[1] & 0x7f
  let offset = 2
  if (length === 126) { length = frame.readUInt16BE(2); offset = 4 } else if (length === 127) { length = Number(frame.readBigUInt64BE(2)); offset = 10 }
  if (frame.length !== offset + length) throw new Error(`frame is ${frame.length} bytes, header says ${offset + length}`)
  return frame.subarray(offset).toString('utf8')
}

t.test('a presence push is encoded as the presence frame was, for WebSocket and SSE alike', async (t) => {
  fc.assert(fc.property(channel, counts, (name, c) => {
    const presence = new EncodedPresence(name, c)
    if (presence.ws !== serverFrame.presence(name, c)) throw new Error(`ws frame differs: ${presence.ws}`)
    if (readFrame(presence.wsFrameBytes) !== presence.ws) throw new Error('the built frame does not read back as its JSON')
    const sse = `event: presence\ndata: ${JSON.stringify({ channel: name, payload: { connections: c.connections, users: c.users } })}\n\n`
    if (presence.sse !== sse) throw new Error(`sse event differs: ${presence.sse}`)
  }), { numRuns: NUM_RUNS })
  t.equal(new EncodedPresence('product:7', { connections: 3, users: 2 }).ws, '{"type":"presence","channel":"product:7","payload":{"connections":3,"users":2}}')
})

t.test('the WebSocket frame is built once, whatever the number of sockets it goes to', async (t) => {
  const presence = new EncodedPresence('room:a', { connections: 1, users: 1 })
  t.equal(presence.wsFrameBytes, presence.wsFrameBytes, 'the same Buffer every time')
  t.equal(presence.sse, presence.sse, 'and the same SSE text')
})
