/** Error codes of docs/protocol.md, WebSocket `error` frames. */
export type ErrorCode = 'bad_request' | 'forbidden' | 'rate_limited' | 'too_many_channels' | 'internal'

/** An error meant for the client: its code and message are safe to send as they are. */
export class ClientError extends Error {
  constructor (readonly code: ErrorCode, message: string) {
    super(message)
    this.name = 'ClientError'
  }
}

/** WebSocket close codes of docs/protocol.md, WebSocket. */
export const CloseCode = {
  GOING_AWAY: 1001,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  TOKEN_EXPIRED: 4001,
  DISCONNECTED: 4003,
  TOO_SLOW: 4008
} as const
