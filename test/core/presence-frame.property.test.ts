import t from 'tap'
import fc from 'fast-check'
import { Receiver } from 'ws'
import { EncodedPresence } from '../../lib/core/presence.js'
import { serverFrame } from '../../lib/transport/protocol.js'

const NUM_RUNS = 500
const channel = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9_\-:.@]{1,200}$/),
  fc.string({ unit: 'binary', maxLength: 40 }), // whatever the name, the frame stays valid JSON
  fc.constantFrom('"', '\\', '\u2028', '\ud800', 'product:"}')
)
const counts = fc.record({ connections: fc.nat(), users: fc.nat() })

/** The text frame a `ws` Receiver reads from these bytes. */
async function readFrame (bytes: Buffer): Promise<string> {
  const receiver = new Receiver({ isServer: false })
  const read = new Promise<string>((resolve, reject) => {
    receiver.on('message', (data: Buffer, isBinary: boolean) => { if (isBinary) reject(new Error('binary frame')); else resolve(data.toString()) })
    receiver.on('error', reject)
  })
  receiver.write(bytes)
  return await read
}

t.test('a presence push is encoded as the presence frame was, for WebSocket and SSE alike', async (t) => {
  await fc.assert(fc.asyncProperty(channel, counts, async (name, c) => {
    const presence = new EncodedPresence(name, c)
    if (presence.ws !== serverFrame.presence(name, c)) throw new Error(`ws frame differs: ${presence.ws}`)
    if (await readFrame(presence.wsFrameBytes) !== presence.ws) throw new Error('the built frame does not read back as its JSON')
    const sse = JSON.stringify({ channel: name, payload: { connections: c.connections, users: c.users } })
    if (presence.sse !== sse) throw new Error(`sse data differs: ${presence.sse}`)
  }), { numRuns: NUM_RUNS })
  t.equal(new EncodedPresence('product:7', { connections: 3, users: 2 }).ws, '{"type":"presence","channel":"product:7","payload":{"connections":3,"users":2}}')
})

t.test('the WebSocket frame is built once, whatever the number of sockets it goes to', async (t) => {
  const presence = new EncodedPresence('room:a', { connections: 1, users: 1 })
  t.equal(presence.wsFrameBytes, presence.wsFrameBytes, 'the same Buffer every time')
})
