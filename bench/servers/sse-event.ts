import { BENCH_CHANNEL, type BenchMessage } from './control.js'

/**
 * The gateway's SSE event for a bench message (docs/protocol.md, Server-Sent Events),
 * which the other SSE servers send byte for byte in size: the `id:` cursor of a stream
 * on its own `user:<id>` channel and the bench channel (epochs are 16 characters here as
 * in lib/broker/epochs.ts), the event type, the `data:` JSON of EncodedEvent.sse.
 */
const EPOCH = 'AAAAAAAAAAAAAAAA'
const USER = 'user:u00000'

export const sseIdOf = (m: BenchMessage): string => `v1;${USER},${EPOCH},0;${BENCH_CHANNEL},${EPOCH},${m.seq}`

/** The object whose JSON is the `data:` line. */
export const sseDataObjectOf = (m: BenchMessage): { channel: string, offset: number, payload: BenchMessage, ts: string } =>
  ({ channel: BENCH_CHANNEL, offset: m.seq, payload: m, ts: new Date(Math.floor(m.sentAt)).toISOString() })

export const sseDataOf = (m: BenchMessage): string => JSON.stringify(sseDataObjectOf(m))

export const sseEventOf = (m: BenchMessage): string => `id: ${sseIdOf(m)}\nevent: bench\ndata: ${sseDataOf(m)}\n\n`
