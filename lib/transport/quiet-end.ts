import type { Socket } from 'node:net'

/**
 * After a frame too large (1009) or a protocol error, `ws` sends the close frame and then
 * ends its side of the TCP connection at once, while the client may still be sending the
 * rest of that frame (ws drains it). Straight to a client that is fine; behind a proxy it
 * is not: nginx takes the upstream's end as the tunnel's, closes the client's socket with
 * that client's data unread, and the kernel answers with a RST that can destroy the close
 * frame before the client reads it: the client saw 1006 where 1009 was promised (audit:
 * 5 of 20 at 4 MB through deploy/nginx/nginx.conf, none direct).
 *
 * So the end is held until the client has been quiet for `quietMs` (it sent what it was
 * sending, read the close frame and answered it), or for at most `maxMs`. The socket is
 * still read meanwhile (ws resumed it to drain), so holding it costs no buffer.
 */
export function endWhenQuiet (raw: Socket, quietMs: number, maxMs: number): void {
  const end = raw.end.bind(raw) as (...args: unknown[]) => Socket
  const started = Date.now()
  let lastData = started
  const onData = (): void => { lastData = Date.now() }
  raw.on('data', onData)
  let held = false
  raw.end = ((...args: unknown[]) => {
    if (held) return raw
    held = true
    const attempt = (): void => {
      if (raw.destroyed) return
      const now = Date.now()
      if (now - lastData >= quietMs || now - started >= maxMs) {
        raw.off('data', onData)
        end(...args)
        return
      }
      setTimeout(attempt, quietMs).unref()
    }
    attempt()
    return raw
  }) as Socket['end']
}
