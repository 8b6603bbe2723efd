import type { TransportKind } from './transport.js'
import type { WebSocketConstructor } from './ws-transport.js'

/** The client's public types. */

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed'

/** An event as both transports deliver it (the WebSocket frame of docs/protocol.md, WebSocket). */
export interface RealtimeEvent {
  type: string
  channel: string
  offset: number
  payload: any
  ts: string
}

export interface StateChange {
  state: ConnectionState
  /** The transport in use; while connecting or reconnecting, the one the next attempt uses. */
  transport: TransportKind | null
  /** While reconnecting: the attempt about to be made, its delay and why the last one ended. */
  attempt?: number
  delayMs?: number
  reason?: string
}

export interface BackoffOptions {
  /** The first delay; each further attempt doubles it. Default 500 ms. */
  initialMs?: number
  /** The ceiling. Default 30 s. Every delay is randomised to 50–100 % of its value. */
  maxMs?: number
}

export interface ConnectOptions {
  /** The gateway's base URL (http/https); defaults to the page's origin. */
  url?: string
  /** A JWT, or a function that returns a fresh one for every (re)connect. */
  token?: string | (() => string | Promise<string>)
  channels?: string[]
  /** Start each of `channels` with its last n events (see SubscribeOptions). */
  rewind?: number
  /** Which transports to use, in order of preference. Default ['ws', 'sse']. */
  transports?: TransportKind[]
  /** Override the derived endpoints (`<url>/ws`, `<url>/sse`). */
  wsUrl?: string
  sseUrl?: string
  /** A WebSocket implementation (Node 20: the `ws` package); default the global one. */
  WebSocket?: WebSocketConstructor
  fetch?: typeof fetch
  backoff?: BackoffOptions
  /** An attempt with no greeting after this long counts as failed. Default 10 s. */
  connectTimeoutMs?: number
  /** An SSE stream silent (not even a heartbeat) for this long is reconnected. Default 45 s. */
  sseIdleTimeoutMs?: number
}

export interface SubscribeOptions {
  /**
   * Start with the channel's last n events (1 to its history size; `1` is its current
   * state: a product's latest stock or price), then live, with no gap and no duplicate.
   * Only when the client has no position in the channel yet; reconnects resume instead.
   */
  rewind?: number
}
