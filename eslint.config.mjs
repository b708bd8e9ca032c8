// Rules from ../shared/STYLE.md: no floating promises, type-only imports, no import cycles,
// and nothing from Node (or from non-workflow code) inside the workflow sandbox.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { importX } from 'eslint-plugin-import-x';
import { builtinModules } from 'node:module';

const nodeBuiltins = [...new Set(builtinModules.flatMap((m) => (m.startsWith('node:') ? [m] : [m, `node:${m}`])))];

export default tseslint.config(
  { ignores: ['node_modules/', '.gg-data/', 'dist/', 'eslint.config.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { 'import-x': importX },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        // node:test's describe/it return promises the runner itself tracks.
        { allowForKnownSafeCalls: [{ from: 'package', name: ['describe', 'it', 'test', 'suite'], package: 'node:test' }] },
      ],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'import-x/no-cycle': 'error',
    },
  },
  {
    files: ['workflows/**/*.ts'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({ name, message: 'Workflows run in a deterministic sandbox: no Node builtins.' })),
          patterns: [
            {
              group: ['**/activities/**', '**/api/**', '**/workers/**', '**/infra/**', '**/core/db/**', 'pg', 'dockerode', 'express', '@kubernetes/*'],
              allowTypeImports: true,
              message: 'Workflows import activities and adapters as types only.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['api/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['../activities/*', '../../activities/*', '../workers/*', '../../workers/*'], message: 'The API never imports activity implementations or workers.' }] }],
    },
  },
  {
    files: ['core/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['**/api/*', '**/activities/*', '**/workers/*', '**/workflows/*', '**/infra/*'], message: 'core/ imports none of the other layers.' }] }],
    },
  },
);
