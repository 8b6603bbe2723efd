/**
 * Logger options for pino (through Fastify). Tokens never reach a log line: the
 * `authorization` header is redacted and the `token` query parameter is masked in
 * every logged URL.
 */
export function redactUrl (url: string): string {
  const query = url.indexOf('?')
  if (query === -1) return url
  const params = url.slice(query + 1).split('&').map((param) => {
    const eq = param.indexOf('=')
    const key = eq === -1 ? param : param.slice(0, eq)
    // However the key is spelled (`%74oken`, `TOKEN`, `token[]`), its value is masked.
    return SECRET_KEY.test(decodedKey(key)) ? `${key}=[REDACTED]` : param
  })
  return `${url.slice(0, query)}?${params.join('&')}`
}

const SECRET_KEY = /^\s*(access_)?token(\[\])?\s*$/i

function decodedKey (key: string): string {
  try {
    return decodeURIComponent(key.replaceAll('+', ' '))
  } catch {
    // Malformed escapes: decode what can be, so `%74oken%` still reads as token.
    return key.replace(/%([0-9a-f]{2})/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)))
  }
}

interface LoggableRequest { method: string, url: string, ip?: string, socket?: { remotePort?: number } }

export function loggerOptions (level: string): object {
  return {
    level,
    redact: { paths: ['req.headers.authorization', 'headers.authorization', '*.token', 'token'], censor: '[REDACTED]' },
    serializers: {
      req (req: LoggableRequest) {
        return { method: req.method, url: redactUrl(req.url), remoteAddress: req.ip, remotePort: req.socket?.remotePort }
      }
    }
  }
}
