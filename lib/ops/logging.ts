/**
 * Logger options for pino (through Fastify). Tokens never reach a log line: the
 * `authorization` header is redacted and the `token` query parameter is masked in
 * every logged URL.
 */
export function redactUrl (url: string): string {
  const query = url.indexOf('?')
  if (query === -1) return holdsJwt(url) ? '[REDACTED]' : url
  const params = url.slice(query + 1).split('&').map((param) => {
    const eq = param.indexOf('=')
    const key = eq === -1 ? param : param.slice(0, eq)
    // However the key is spelled (`%74oken`, `TOKEN`, `token[]`), its value is masked.
    return SECRET_KEY.test(decodedKey(key)) ? `${key}=[REDACTED]` : param
  })
  // A token anywhere else, under a name the gateway does not read (`;token=`, `x=1%26token=`,
  // `token%00=`) or in the path, is still a token: that part of the URL is not logged.
  const path = url.slice(0, query)
  const rest = params.join('&')
  return `${holdsJwt(path) ? '[REDACTED]' : path}?${holdsJwt(rest) ? '[REDACTED]' : rest}`
}

const SECRET_KEY = /^\s*(access_)?token(\[\])?\s*$/i

/**
 * Runs of base64url characters and dots long enough to be a JWT. One character class and
 * nothing after it, so matching is linear: a pattern of three dotted parts backtracked over
 * a long run without dots (64 KiB of letters took 24 s).
 */
const DOTTED_RUN = /[A-Za-z0-9_.-]{34,}/g

/**
 * Whether the text holds what looks like a JWT: three base64url parts joined by dots, the
 * signature the longest (43 characters for HS256). Not anchored on the header's `eyJ`: a
 * malformed escape just before a token can swallow its first character when decoded.
 */
function looksLikeJwt (text: string): boolean {
  for (const run of text.match(DOTTED_RUN) ?? []) {
    const parts = run.split('.')
    for (let i = 0; i + 2 < parts.length; i++) {
      if (parts[i].length >= 8 && parts[i + 1].length >= 8 && parts[i + 2].length >= 16) return true
    }
  }
  return false
}

/** Whether the text, percent-decoded as far as it decodes, holds a JWT. */
function holdsJwt (text: string): boolean {
  return looksLikeJwt(text) || (text.includes('%') && looksLikeJwt(decodedKey(text)))
}

function decodedKey (key: string): string {
  try {
    return decodeURIComponent(key.replaceAll('+', ' '))
  } catch {
    // Malformed escapes: decode what can be, so `%74oken%` still reads as token.
    return key.replace(/%([0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)))
  }
}

/**
 * Logged fields that may hold a secret. A Redis error carries the command that failed with
 * its arguments (ioredis's `err.command`): an AUTH refused after a password rotation logged
 * the password in clear (audit, session 27), and other commands' arguments are events'
 * payloads. A cluster's error carries its last node's error, a MULTI's those of its commands.
 */
const SECRET_PATHS = [
  'req.headers.authorization', 'headers.authorization', '*.token', 'token',
  'err.command.args', 'err.lastNodeError.command.args', 'err.previousErrors[*].command.args'
]

interface LoggableRequest { method: string, url: string, ip?: string, socket?: { remotePort?: number } }

export function loggerOptions (level: string): object {
  return {
    level,
    redact: { paths: [...SECRET_PATHS], censor: '[REDACTED]' },
    serializers: {
      req (req: LoggableRequest) {
        return { method: req.method, url: redactUrl(req.url), remoteAddress: req.ip, remotePort: req.socket?.remotePort }
      }
    }
  }
}
