// @ts-check
// Lint rules for the TypeScript sources. Layout is Prettier's job (see .prettierrc.json):
// eslint-config-prettier, last below, switches off every rule that would argue with it.
import js from '@eslint/js';
import prettierCompat from 'eslint-config-prettier/flat';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import importX from 'eslint-plugin-import-x';
import { defineConfig, globalIgnores } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  globalIgnores(['dist/', 'node_modules/']),

  {
    files: ['**/*.js'],
    extends: [js.configs.recommended],
  },

  {
    files: ['**/*.ts', '**/*.cts'],
    extends: [
      js.configs.recommended,
      // Type-aware: the rules read the types tsc infers from tsconfig.json.
      tseslint.configs.recommendedTypeChecked,
      importX.flatConfigs.recommended,
      importX.flatConfigs.typescript,
    ],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    settings: {
      // Resolves './x.js' specifiers to the './x.ts' sources, as NodeNext does.
      'import-x/resolver-next': [createTypeScriptImportResolver()],
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // A promise nobody awaits loses its rejection; a sandbox that fails that way keeps running.
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/use-unknown-in-catch-callback-variable': 'error',
      // `any` stays out: none written by hand, none flowing out of JSON.parse or FFI results unchecked.
      '@typescript-eslint/no-explicit-any': 'error',
      // Runtime import cycles (type-only imports are erased and not counted; the architecture test
      // in test/unit checks those too, and folder cycles).
      'import-x/no-cycle': 'error',
      'import-x/no-self-import': 'error',
      'import-x/no-useless-path-segments': 'error',
      'import-x/no-duplicates': 'error',
      // `const { a: _a, ...rest } = o` is how a field is dropped from a copy.
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true, argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // Option validation deliberately prints whatever the caller passed, objects included.
      '@typescript-eslint/no-base-to-string': 'off',
      // The sources are written for noUncheckedIndexedAccess (`m[1]!`), which tsconfig.json does not
      // enable yet: until it does, this rule calls every such `!` unnecessary and its fix deletes them.
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
    },
  },

  {
    // Tests read JSON printed by the CLI and the helper; asserting on its fields is the point.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },

  prettierCompat,

  {
    // After prettierCompat, which switches max-len off: Prettier never splits a string, a template or a comment,
    // so those are kept within its printWidth by hand (long strings as pieces joined with +).
    rules: {
      'max-len': ['error', { code: 140, ignoreUrls: true, ignoreRegExpLiterals: true }],
    },
  },
);
