import fc from 'fast-check'
import t from 'tap'
import { mintToken } from '../../lib/auth/token.js'
import { redactUrl } from '../../lib/ops/logging.js'

// Logged URLs (lib/ops/logging.ts): a token never reaches a log line, however the URL spells it.
const jwt = mintToken('redact-secret', { sub: 'someone', ttlSeconds: 60 })
const signature = jwt.slice(jwt.lastIndexOf('.') + 1)
/** What a log reader could recover of the URL: the text, and the text percent-decoded. */
const leaks = (logged: string): boolean => {
  let decoded = logged
  try { decoded = decodeURIComponent(logged) } catch { decoded = logged.replace(/%([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16))) }
  return logged.includes(signature) || decoded.includes(signature)
}
/** Percent-encodes some characters of the text, as a client may. */
const spelled = (text: string, picks: boolean[]) =>
  [...text].map((c, i) => picks[i % picks.length] ? `%${c.charCodeAt(0).toString(16).padStart(2, '0')}` : c).join('')

t.test('a token anywhere in a URL, however spelled, is not logged', async (t) => {
  for (const url of [
    `/ws?x=1;token=${jwt}`, `/ws?x=1%26token=${jwt}`, `/ws?token%00=${jwt}`, `/ws?x=1&amp;token=${jwt}`,
    `/ws?token%3D${jwt}`, `/realtime/history/${jwt}`, `/ws?token=${jwt}`, `/ws?%74oken=${jwt}`
  ]) t.notOk(leaks(redactUrl(url)), url)
  fc.assert(fc.property(
    fc.webPath(), fc.string({ unit: fc.constantFrom(...'ab=&;%x1'.split('')), maxLength: 12 }), fc.array(fc.boolean(), { minLength: 1, maxLength: 5 }),
    fc.constantFrom('', 'token=', 'x=', ';t=', '&', 'k%3D'),
    (path, before, picks, key) => {
      const inQuery = `${path}?${before}${key}${spelled(jwt, picks)}`
      if (leaks(redactUrl(inQuery))) throw new Error(`leaked: ${inQuery}`)
      const inPath = `${path}/${spelled(jwt, picks)}`
      if (leaks(redactUrl(inPath))) throw new Error(`leaked: ${inPath}`)
    }), { numRuns: 2000 })
})

t.test('a URL without a token is logged as it came', async (t) => {
  fc.assert(fc.property(fc.webPath(), fc.webQueryParameters(), (path, query) => {
    const url = query === '' ? path : `${path}?${query}`
    if (/token/i.test(decodeURIComponentLeniently(url))) return
    if (redactUrl(url) !== url) throw new Error(`changed: ${url} → ${redactUrl(url)}`)
  }), { numRuns: 2000 })
  t.equal(redactUrl('/sse?channels=product:7,inventory&rewind=1'), '/sse?channels=product:7,inventory&rewind=1')
})

function decodeURIComponentLeniently (text: string): string {
  try { return decodeURIComponent(text) } catch { return text }
}

t.test('a long URL is redacted in linear time (no backtracking over long runs)', async (t) => {
  for (const text of ['a'.repeat(64_000), 'aaaaaaaa.'.repeat(7000), `${'a'.repeat(30)}.`.repeat(2000), '%61'.repeat(20_000)]) {
    const started = performance.now()
    redactUrl(`/sse?x=${text}`)
    redactUrl(`/${text}`)
    const ms = performance.now() - started
    // Linear: a few milliseconds; the backtracking pattern took seconds at this size.
    t.ok(ms < 1000, `${text.slice(0, 12)}… (${text.length} characters): ${ms.toFixed(1)} ms`)
  }
})
