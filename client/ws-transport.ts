import type { ServerFrame, Transport, TransportEvents } from './transport.js'

/**
 * The part of the WebSocket API the client uses, so the browser's WebSocket and the
 * `ws` package (Node 20 has no global WebSocket) both fit.
 */
export interface WebSocketLike {
  readonly readyState: number
  onopen: ((event: any) => void) | null
  onmessage: ((event: any) => void) | null
  onclose: ((event: any) => void) | null
  onerror: ((event: any) => void) | null
  send(data: string): void
  close(code?: number, reason?: string): void
}

export type WebSocketConstructor = new (url: string) => WebSocketLike

const OPEN = 1

/**
 * One WebSocket to /ws. Browsers cannot see the server's protocol-level pings, so the
 * client sends `system:ping` every `heartbeatMs` (from the greeting) and gives up on a
 * socket that stayed silent for a whole interval: a dead network path then ends in a
 * reconnect instead of a socket that looks open forever.
 */
export function openWebSocket (url: string, WebSocketImpl: WebSocketConstructor, events: TransportEvents): Transport {
  let done = false
  let heartbeat: ReturnType<typeof setInterval> | undefined
  let heard = true
  const socket = new WebSocketImpl(url)

  const finish = (code: number | undefined, reason: string): void => {
    if (done) return
    done = true
    clearInterval(heartbeat)
    events.closed({ code, reason })
  }

  const startHeartbeat = (intervalMs: number): void => {
    clearInterval(heartbeat)
    heartbeat = setInterval(() => {
      if (!heard) {
        try { socket.close(4000, 'heartbeat timeout') } catch { /* already closing */ }
        return finish(undefined, 'heartbeat timeout')
      }
      heard = false
      if (socket.readyState === OPEN) socket.send('{"type":"system:ping"}')
    }, intervalMs)
  }

  socket.onmessage = (event: { data: unknown }) => {
    if (done) return
    heard = true
    let frame: ServerFrame
    try {
      frame = JSON.parse(String(event.data))
    } catch {
      return // every frame of the protocol is JSON; anything else is not ours to act on
    }
    if (frame.type === 'system:connected' && typeof frame.payload?.heartbeatMs === 'number') {
      startHeartbeat(frame.payload.heartbeatMs)
    }
    events.frame(frame)
  }
  socket.onclose = (event: { code?: number, reason?: string }) => finish(event.code, event.reason ?? '')
  socket.onerror = () => { /* a close event always follows, with the code */ }

  return {
    kind: 'ws',
    send (frame: object): boolean {
      if (done || socket.readyState !== OPEN) return false
      socket.send(JSON.stringify(frame))
      return true
    },
    close (): void {
      if (done) return
      done = true
      clearInterval(heartbeat)
      try { socket.close(1000, 'client closed') } catch { /* not open yet: the browser aborts it */ }
    }
  }
}
