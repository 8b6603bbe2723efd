/**
 * Logger options for pino (through Fastify). Tokens never reach a log line: the
 * `authorization` header is redacted and the `token` query parameter is masked in
 * every logged URL.
 */
export function redactUrl (url: string): string {
  return url.replace(/([?&](?:token|access_token)=)[^&#]*/gi, '$1[REDACTED]')
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
