/**
 * What the client needs from a transport. Both the WebSocket and the SSE transport
 * hand the client frames in the WebSocket shape of docs/protocol.md, WebSocket, so everything above
 * this seam is transport-blind.
 */

/** A server frame: a control frame (`subscribed`, `error`, …) or an event (it has a `channel`). */
export interface ServerFrame {
  type: string
  id?: string | number
  channel?: string
  offset?: number
  payload?: any
  ts?: string
  /** SSE only: the stream's resume cursor after this frame (its `id:` line). */
  cursor?: string
}

export interface TransportClosed {
  /** WebSocket close code, when there was one. */
  code?: number
  /** HTTP status of a refused SSE request. */
  status?: number
  reason: string
}

export interface TransportEvents {
  frame(frame: ServerFrame): void
  /** Called at most once, and never after the client itself called `close()`. */
  closed(info: TransportClosed): void
}

export type TransportKind = 'ws' | 'sse'

export interface Transport {
  readonly kind: TransportKind
  /** False when the frame could not go out (SSE has no upstream; a socket not open). */
  send(frame: object): boolean
  close(): void
}
