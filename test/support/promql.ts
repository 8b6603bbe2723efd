/**
 * Just enough PromQL reading to check our dashboards and alert rules against what the
 * gateway exports: the metric names an expression reads, the labels its matchers name,
 * and the labels it groups by. Not a parser: it knows the shapes our queries use.
 */

export interface PromQlUse {
  metrics: string[]
  /** metric → labels named in its `{…}` matchers. */
  matchers: Record<string, string[]>
  /** Labels named in by/without/on/ignoring/group_left/group_right clauses. */
  grouping: string[]
}

// Functions are recognised by the `(` that follows them; these words stand alone.
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless',
  'offset', 'sum', 'avg', 'min', 'max', 'count', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'count_values', 'group', 'inf', 'nan'])

const IDENT = /[a-zA-Z_:][a-zA-Z0-9_:]*/g

export function readPromQl (expression: string): PromQlUse {
  const grouping: string[] = []
  const matchers: Record<string, string[]> = {}
  let expr = expression
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""') // label values may hold anything
    .replace(/\$\{?\w+\}?/g, ' ') // Grafana variables ($__rate_interval, $__range)
  expr = expr.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_m, _k, labels: string) => {
    grouping.push(...(labels.match(IDENT) ?? []))
    return ' '
  })
  expr = expr.replace(/([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}/g, (_m, name: string | undefined, body: string) => {
    const labels = [...body.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)].map((m) => m[1])
    if (name === undefined) return ' __name_only_matchers__ '
    matchers[name] = [...(matchers[name] ?? []), ...labels]
    return ` ${name} `
  })
  expr = expr
    .replace(/\[[^\]]*\]/g, ' ') // range and subquery windows
    .replace(/\b\d+(?:ms|s|m|h|d|w|y)\b/g, ' ') // durations
    .replace(/\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b/g, ' ') // numbers
  const metrics = new Set<string>(Object.keys(matchers))
  for (const m of expr.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    if (m[2] !== undefined || KEYWORDS.has(m[1].toLowerCase()) || m[1] === '__name_only_matchers__') continue
    metrics.add(m[1])
  }
  return { metrics: [...metrics], matchers, grouping }
}

/** Labels a legend (`{{transport}} {{ $labels.topic }}`) or annotation template shows. */
export const templateLabels = (template: string): string[] =>
  [...template.matchAll(/\{\{\s*(?:\$labels\.)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}/g)].map((m) => m[1])

/**
 * The series names one scrape of Prometheus text exposes, from its `# TYPE` lines: a
 * histogram `h` is read as h_bucket, h_sum and h_count; a summary also as itself.
 */
export function exposedSeries (text: string): Map<string, string> {
  const series = new Map<string, string>() // series name → metric family
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, kind] = m
    const names = kind === 'histogram'
      ? [`${name}_bucket`, `${name}_sum`, `${name}_count`]
      : kind === 'summary' ? [name, `${name}_sum`, `${name}_count`] : [name]
    for (const n of names) series.set(n, name)
  }
  return series
}
