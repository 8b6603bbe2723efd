import globals from 'globals'
import neostandard from 'neostandard'

// The Fastify ecosystem's style (neostandard), with its TypeScript rules.
export default [
  ...neostandard({
    ts: true,
    ignores: ['dist/**', 'coverage/**', '.tap/**', 'bench/results/**']
  }),
  {
    rules: {
      // `void promise` marks a promise deliberately not awaited (fire and forget, errors handled inside).
      'no-void': ['error', { allowAsStatement: true }],
      // TypeScript itself reports real redeclarations; a schema and its Static type share a name on purpose.
      '@typescript-eslint/no-redeclare': 'off'
    }
  },
  {
    files: ['public/**/*.js', 'client/**/*.ts'],
    languageOptions: { globals: globals.browser }
  }
]
