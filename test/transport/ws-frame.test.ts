import t from 'tap'
import WebSocket from 'ws'
import { textFrame } from '../../lib/core/event.js'
import { post, serviceToken, startServer, token, WsClient } from '../support/helper.js'

// Event frames are built once per event and written as is (lib/core/event.ts textFrame), so
// their header must be exactly what ws itself would write, at every length boundary.
const LENGTHS = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000]
// ws exports its Sender at run time; @types/ws does not declare it.
const { Sender } = WebSocket as unknown as { Sender: { frame(data: Buffer, options: object): Buffer[] } }

t.test('textFrame matches ws framing at every length boundary', async (t) => {
  for (const length of LENGTHS) {
    const payload = Buffer.alloc(length, 0x61)
    const expected = Buffer.concat(Sender.frame(payload, { fin: true, opcode: 1, mask: false, readOnly: true, rsv1: false }))
    t.same(textFrame(payload), expected, `${length} bytes`)
  }
})

t.test('events of every frame-header size reach a real client whole and in order', async (t) => {
  const { url, wsUrl } = await startServer(t, { EVENT_MAX_BYTES: 256 * 1024 })
  const client = await WsClient.connect(t, wsUrl, token('frames'))
  await client.subscribe(['room:frames'])
  // The frame is the JSON event, so pad the payload to land its length near each boundary.
  const pads = [0, 40, 100, 65_400, 65_600, 200_000]
  for (const pad of pads) {
    const res = await post(`${url}/realtime/publish`, serviceToken(), { channel: 'room:frames', type: 'big', payload: { pad: 'x'.repeat(pad) } })
    t.equal(res.status, 202)
  }
  for (const [i, pad] of pads.entries()) {
    const event = await client.next((f) => f.type === 'big' && f.offset === i + 1)
    t.equal(event.payload.pad.length, pad, `event ${i + 1} arrived whole`)
  }
})
