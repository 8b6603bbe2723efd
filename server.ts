import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { type Config, ConfigError, loadConfig } from './lib/ops/config.js'
import { DEV_SECRET_FILE, makeDevSecret } from './lib/auth/token.js'

/** Runs the gateway: reads the environment, listens, and shuts down gracefully. */
async function main (): Promise<void> {
  let config: Config
  try {
    config = loadConfig(process.env)
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(err.message + '\n')
      process.exit(1)
    }
    throw err
  }

  let madeSecret = false
  if (config.JWT_SECRET === undefined && config.JWT_PUBLIC_KEY === undefined) {
    config = { ...config, JWT_SECRET: makeDevSecret() }
    madeSecret = true
  }

  const app = await buildApp(config)
  if (madeSecret) {
    app.log.warn(`JWT_SECRET is not set: made a secret for this run and saved it to ${DEV_SECRET_FILE}. ` +
      'Mint a token with: npm run token -- --sub 42 --role admin (set JWT_SECRET in production)')
  }

  closeWithGrace({ delay: config.SHUTDOWN_TIMEOUT_MS, logger: app.log }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal }, 'shutting down: closing connections with 1012')
    await app.close()
  })

  try {
    await app.listen({ port: config.PORT, host: config.HOST })
  } catch (err) {
    // A HOST that does not resolve or is not this machine's is an invalid value like a PORT
    // of abc: the same one stderr line naming it. Anything else (the port taken, DNS not up
    // yet: EAI_AGAIN) is logged.
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOTFOUND' || code === 'EADDRNOTAVAIL') {
      process.stderr.write(new ConfigError('HOST', `${JSON.stringify(config.HOST)} cannot be listened on: ${(err as Error).message}`).message + '\n')
    } else {
      app.log.error({ err }, `could not listen on HOST=${config.HOST} PORT=${config.PORT}: ${(err as Error).message}`)
    }
    process.exit(1)
  }
  app.log.info(`dashboard: http://localhost:${config.PORT}/ · API docs: /api/docs · metrics: /metrics · WebSocket: /ws · SSE: /sse`)
}

await main()
