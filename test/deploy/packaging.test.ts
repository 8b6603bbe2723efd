import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { parse as parseYaml } from 'yaml'
import { configFrom, EnvSchema, loadConfig } from '../../lib/ops/config.js'
import {
  dependsOn, environment, find, interpolate, loadCompose, parseDockerfile, parseEnvExample, parseNginx, read, ROOT, VARIABLE_REF
} from '../support/deploy-files.js'
import { startServer } from '../support/helper.js'

/**
 * The Dockerfile, docker-compose.yml and .env.example, checked statically: no Docker
 * engine runs here (and none in CI), so every wire between the services is followed by
 * hand — a renamed service, port, variable or file breaks a test here, not a deploy.
 */

const compose = loadCompose()
const services = compose.services
const envExample = parseEnvExample(read('.env.example'))
const schemaVars = Object.keys(EnvSchema.properties)
const GATEWAYS = ['gateway-1', 'gateway-2']
/** Topics of docs/protocol.md, Kafka, and the dead-letter topic. */
const CONTRACT_TOPICS = ['order.created', 'order.updated', 'order.cancelled', 'inventory.updated', 'product.created',
  'product.updated', 'notification.created', 'realtime.publish']
/** Variables of .env.example that only docker-compose.yml reads. */
const COMPOSE_ONLY = ['HTTP_PORT', 'GRAFANA_ADMIN_PASSWORD']

/** The values Compose would interpolate with: .env.example's lines, JWT_SECRET filled in. */
const vars = { ...Object.fromEntries(envExample.filter((l) => l.active).map((l) => [l.name, l.value])), JWT_SECRET: 'a-test-secret' }
const env = (service: string) => Object.fromEntries(Object.entries(environment(services[service])).map(([k, v]) => [k, interpolate(v, vars)]))

t.test('.env.example lists every variable of the config schema with its default, and nothing else', async (t) => {
  const listed = new Map(envExample.map((l) => [l.name, l]))
  t.equal(listed.size, envExample.length, 'no variable listed twice')
  for (const name of schemaVars) {
    const line = listed.get(name)
    if (!t.ok(line, `${name} is in .env.example`) || line === undefined) continue
    const def = (EnvSchema.properties as Record<string, { default?: unknown }>)[name].default
    if (line.active) t.equal(line.value, '', `${name} is left for the operator to set`)
    else t.equal(line.value, def === undefined ? '' : String(def), `${name} shows its default`)
  }
  for (const { name } of envExample) {
    t.ok(schemaVars.includes(name) || COMPOSE_ONLY.includes(name), `${name} is a gateway variable or a compose-only one`)
  }
  for (const name of COMPOSE_ONLY) t.match(read('docker-compose.yml'), `\${${name}`, `${name} is used by docker-compose.yml`)
  // The defaults as written parse: uncommenting every line changes nothing.
  const all = Object.fromEntries(envExample.filter((l) => schemaVars.includes(l.name)).map((l) => [l.name, l.value]))
  t.same(loadConfig({ ...all, JWT_SECRET: 'x' }), configFrom({ JWT_SECRET: 'x' }), 'the listed defaults are the real defaults')
  const readme = read('README.md')
  for (const name of schemaVars) t.match(readme, `\`${name}\``, `README documents ${name}`)
})

t.test('the README\'s configuration table gives each variable\'s real default', async (t) => {
  // Rows such as | `A`, `B` | what they do | `1`, `2` |: the last cell's backticked values,
  // one per variable (or one for all of them); a default said in words ("unset") is skipped.
  const defaults = EnvSchema.properties as Record<string, { default?: unknown }>
  const rows = read('README.md').split('\n').filter((line) => /^\| `[A-Z_]+`/.test(line))
  let checked = 0
  for (const row of rows) {
    const cells = row.split('|').map((c) => c.trim())
    const names = [...cells[1].matchAll(/`([A-Z_0-9]+)`/g)].map((m) => m[1])
    const values = [...cells[cells.length - 2].matchAll(/`([^`]*)`/g)].map((m) => m[1])
    if (values.length === 0 || names.some((n) => !schemaVars.includes(n))) continue
    t.ok(values.length === names.length || values.length === 1, `${names.join(', ')}: a default for each (${values.join(', ')})`)
    names.forEach((name, i) => {
      const def = defaults[name].default
      if (def === undefined) return // not a value: NODE_ID's `<hostname>-<pid>-<random>`
      t.equal(values[values.length === 1 ? 0 : i], String(def), `README: ${name} defaults to ${String(def)}`)
      checked++
    })
  }
  t.ok(checked >= 40, `${checked} defaults checked`)
})

t.test('docker-compose.yml: every service it needs, wired to each other', async (t) => {
  for (const name of ['redis', 'kafka', 'kafka-init', ...GATEWAYS, 'nginx', 'prometheus', 'grafana']) {
    t.ok(services[name], `service ${name}`)
  }
  for (const [name, service] of Object.entries(services)) {
    t.ok(service.image !== undefined || service.build !== undefined, `${name} has an image or a build`)
    for (const target of dependsOn(service)) {
      t.ok(services[target], `${name} depends on an existing service ${target}`)
      const condition = Array.isArray(service.depends_on) ? undefined : service.depends_on[target]?.condition
      if (condition === 'service_healthy') {
        const hasCheck = services[target].healthcheck !== undefined ||
          (services[target].build !== undefined && /^HEALTHCHECK /m.test(read('Dockerfile')))
        t.ok(hasCheck, `${target} has a healthcheck for ${name} to wait on`)
      }
      if (condition === 'service_completed_successfully') t.equal(services[target].restart, 'no', `${target} runs once`)
    }
    for (const volume of service.volumes ?? []) {
      const source = String(volume).split(':')[0]
      if (source.startsWith('./')) t.ok(existsSync(join(ROOT, source)), `${name} mounts ${source}, which exists`)
      else t.ok(compose.volumes !== undefined && source in compose.volumes, `${name}: volume ${source} is declared`)
    }
  }
  for (const match of read('docker-compose.yml').replaceAll('$$', '').matchAll(VARIABLE_REF)) {
    t.ok(envExample.some((l) => l.name === match[1]), `\${${match[1]}} is listed in .env.example`)
  }
})

t.test('docker-compose.yml: two gateway replicas on Redis and Kafka, each a valid configuration', async (t) => {
  const redisPort = 6379
  const kafkaEnv = env('kafka')
  for (const name of GATEWAYS) {
    const service = services[name]
    const vars = env(name)
    t.equal(service.build, '.', `${name} is built from the Dockerfile`)
    t.ok(service.init, `${name} runs under an init that forwards SIGTERM`)
    for (const key of Object.keys(vars)) t.ok(schemaVars.includes(key), `${name}: ${key} is a config variable`)
    const config = loadConfig(vars)
    t.equal(config.NODE_ENV, 'production')
    t.equal(config.NODE_ID, name, `${name} names itself in stats`)
    t.ok(config.JWT_SECRET, 'JWT_SECRET comes from .env')
    const redis = new URL(config.REDIS_URL ?? '')
    t.ok(services[redis.hostname], `REDIS_URL points at the ${redis.hostname} service`)
    t.equal(Number(redis.port || 6379), redisPort)
    for (const broker of (config.KAFKA_BROKERS ?? '').split(',')) {
      const [host] = broker.split(':')
      t.ok(services[host], `KAFKA_BROKERS points at the ${host} service`)
      t.match(kafkaEnv.KAFKA_ADVERTISED_LISTENERS, `://${broker}`, `${broker} is a listener Kafka advertises`)
    }
    t.same(dependsOn(service).sort(), ['kafka-init', 'redis'], `${name} starts once Redis is healthy and the topics exist`)
  }
  const ids = GATEWAYS.map((name) => env(name).NODE_ID)
  t.equal(new Set(ids).size, ids.length, 'replicas have distinct NODE_IDs')
  t.equal(env('gateway-1').PORT, '3000', 'the port nginx and Prometheus use')
})

t.test('docker-compose.yml: Kafka in KRaft mode, and the topics of docs/protocol.md, Kafka created at start', async (t) => {
  const kafka = env('kafka')
  t.equal(services.kafka.image, 'apache/kafka:3.9.1')
  t.same(kafka.KAFKA_PROCESS_ROLES.split(',').sort(), ['broker', 'controller'], 'one node is broker and controller')
  const [voterId, voterAddress] = kafka.KAFKA_CONTROLLER_QUORUM_VOTERS.split('@')
  t.equal(voterId, kafka.KAFKA_NODE_ID, 'the only voter is this node')
  const controllerPort = /CONTROLLER:\/\/[^:,]*:(\d+)/.exec(kafka.KAFKA_LISTENERS)?.[1]
  t.equal(voterAddress, `kafka:${controllerPort}`, 'the voter address is the CONTROLLER listener')
  t.equal(kafka.KAFKA_CONTROLLER_LISTENER_NAMES, 'CONTROLLER')
  for (const listener of kafka.KAFKA_LISTENERS.split(',')) {
    t.match(kafka.KAFKA_LISTENER_SECURITY_PROTOCOL_MAP, `${listener.split(':')[0]}:`, `${listener} has a security protocol`)
  }
  t.equal(Buffer.from(kafka.CLUSTER_ID, 'base64url').length, 16, 'CLUSTER_ID is a 16-byte base64url uuid')
  t.equal(kafka.CLUSTER_ID.length, 22)
  t.ok(services.kafka.healthcheck, 'Kafka has a healthcheck')

  const init = env('kafka-init')
  t.equal(services['kafka-init'].image, services.kafka.image, 'topics are made with the same Kafka version')
  t.same(init.TOPICS.split(/\s+/).filter(Boolean).sort(), [...CONTRACT_TOPICS, EnvSchema.properties.KAFKA_DLQ_TOPIC.default].sort(),
    'every topic of docs/protocol.md, Kafka and the dead-letter topic')
  t.equal(init.BOOTSTRAP, env('gateway-1').KAFKA_BROKERS, 'topics go to the broker the gateways read')
  t.equal(init.TOPIC_PREFIX, env('gateway-1').KAFKA_TOPIC_PREFIX, 'with the gateways\' topic prefix')
  const script = services['kafka-init'].command.join('\n')
  t.match(script, '/opt/kafka/bin/kafka-topics.sh')
  t.match(script, /--create --if-not-exists/)
  // eslint-disable-next-line no-template-curly-in-string -- the compose file's own syntax, not a template
  t.match(script, '$${TOPIC_PREFIX}$${topic}', 'each topic with the prefix ($$ escapes Compose interpolation)')
  t.ok(Number(init.PARTITIONS) >= GATEWAYS.length, 'at least one partition per replica')
})

t.test('docker-compose.yml: nginx, Prometheus and Grafana reach the replicas', async (t) => {
  const nginxConf = parseNginx(read('deploy/nginx/nginx.conf'))
  for (const upstream of find(find(nginxConf, 'http')[0].block, 'upstream')) {
    t.same(find(upstream.block, 'server').map((s) => s.args[0]).sort(), GATEWAYS.map((g) => `${g}:3000`),
      `nginx balances over both replicas (${upstream.args[0]})`)
  }
  t.ok(services.nginx.volumes.includes('./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro'))
  t.same(dependsOn(services.nginx).sort(), GATEWAYS)

  const prometheus = parseYaml(read('deploy/prometheus/prometheus.yml'))
  const targets = prometheus.scrape_configs.flatMap((c: any) => c.static_configs.flatMap((s: any) => s.targets))
  t.same(targets.sort(), GATEWAYS.map((g) => `${g}:3000`), 'Prometheus scrapes both replicas directly')
  t.ok(services.prometheus.command.includes('--config.file=/etc/prometheus/prometheus.yml'))
  for (const file of ['prometheus.yml', ...prometheus.rule_files]) {
    t.ok(services.prometheus.volumes.includes(`./deploy/prometheus/${file}:/etc/prometheus/${file}:ro`), `${file} is mounted`)
  }

  const datasource = parseYaml(read('deploy/grafana/provisioning/datasources/prometheus.yml')).datasources[0]
  t.equal(new URL(datasource.url).host, 'prometheus:9090', 'Grafana reads the prometheus service')
  const provider = parseYaml(read('deploy/grafana/provisioning/dashboards/realtime-gateway.yml')).providers[0]
  t.ok(services.grafana.volumes.includes(`./deploy/grafana/dashboards:${provider.options.path}:ro`), 'dashboards are where the provider looks')
  t.ok(services.grafana.volumes.includes('./deploy/grafana/provisioning:/etc/grafana/provisioning:ro'))
  const dashboard = JSON.parse(read('deploy/grafana/dashboards/realtime-gateway.json'))
  for (const panel of dashboard.panels) {
    t.equal(panel.datasource.uid, datasource.uid, `panel "${panel.title}" uses the provisioned datasource`)
  }
})

t.test('Dockerfile: multi-stage, production deps only, non-root, healthcheck, node as the process', async (t) => {
  const { stages } = parseDockerfile(read('Dockerfile'))
  t.ok(stages.length >= 2, 'multi-stage')
  const build = stages[0]
  const runtime = stages[stages.length - 1]
  const runs = (stage: typeof build) => stage.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args).join('\n')
  t.match(runs(build), /npm ci(?![^\n]*--omit=dev)/, 'the build installs dev dependencies')
  t.match(runs(build), 'npm run build')
  t.match(runs(runtime), 'npm ci --omit=dev', 'the runtime installs production dependencies only')
  t.notMatch(runs(runtime), 'npm run build')
  t.match(runtime.from, /^node:24-(slim|alpine)/, 'a small Node 24 LTS base image')

  const copies = runtime.instructions.filter((i) => i.keyword === 'COPY').map((i) => i.args)
  t.ok(copies.some((c) => c.startsWith(`--from=${build.name} /app/dist `)), 'dist/ comes from the build stage')
  t.notOk(copies.some((c) => /^\.\s/.test(c) || /\s\.\s+\.$/.test(c) || c === '. .'), 'the runtime does not copy the source tree')

  const users = runtime.instructions.filter((i) => i.keyword === 'USER').map((i) => i.args.trim())
  t.ok(users.length > 0 && !['root', '0', '0:0'].includes(users[users.length - 1]), `runs as a non-root user (${users.at(-1)})`)
  const envs = runtime.instructions.filter((i) => i.keyword === 'ENV').map((i) => i.args).join(' ')
  t.match(envs, /NODE_ENV=production/)

  const health = runtime.instructions.find((i) => i.keyword === 'HEALTHCHECK')
  t.ok(health, 'HEALTHCHECK')
  t.match(health?.args, '/health/live')
  t.notMatch(health?.args, /\b(curl|wget)\b/, 'no curl or wget in node:24-slim')

  const cmd = runtime.instructions.filter((i) => i.keyword === 'CMD').at(-1)
  const argv = JSON.parse(cmd?.args ?? 'null') as string[]
  t.same(argv.slice(0, 1), ['node'], 'exec-form CMD with node itself as the process, never npm or a shell')
  t.equal(argv[1], 'dist/server.js')
  t.match(JSON.parse(read('package.json')).scripts.start, `node ${argv[1]}`, 'the same entry point as npm start')
  t.notOk(runtime.instructions.some((i) => i.keyword === 'ENTRYPOINT' && /npm|sh -c/.test(i.args)), 'no npm or shell entrypoint')

  const ignored = read('.dockerignore').split('\n').map((l) => l.trim())
  for (const entry of ['node_modules', 'dist', '.git', '.env', '.jwt-dev-secret']) t.ok(ignored.includes(entry), `.dockerignore keeps ${entry} out`)
})

t.test('the HEALTHCHECK command really probes /health/live', async (t) => {
  const { stages } = parseDockerfile(read('Dockerfile'))
  const health = stages[stages.length - 1].instructions.find((i) => i.keyword === 'HEALTHCHECK')
  const argv = JSON.parse(/CMD\s+(\[.*\])\s*$/.exec(health?.args ?? '')?.[1] ?? '[]') as string[]
  t.equal(argv[0], 'node')
  const { url } = await startServer(t)
  const port = new URL(url).port
  // Asynchronously: the server answering the probe runs in this process.
  const probe = (p: string) => new Promise<number | null>((resolve) => {
    execFile(process.execPath, argv.slice(1), { env: { ...process.env, PORT: p }, timeout: 15_000 }, (err) => {
      resolve(err === null ? 0 : typeof err.code === 'number' ? err.code : null)
    })
  })
  t.equal(await probe(port), 0, 'healthy while the server serves')
  t.equal(await probe('1'), 1, 'unhealthy when nothing answers')
})
