import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["node_modules/", "dist/", "service/src/gen/", ".data/", "coverage/", "portal/build/", "portal/.svelte-kit/", "portal/.build-lock/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-console": ["error", { allow: ["error", "log"] }],
    },
  },
  {
    // A promise nobody awaits in the service is a write that may not have happened when its transaction
    // commits (inTransaction runs statements as they are awaited), or an error nobody sees.
    files: ["service/src/**/*.ts"],
    ignores: ["service/src/gen/**"],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: { "@typescript-eslint/no-floating-promises": "error" },
  },
  {
    // The keyring's barrier (keyring/index.ts) is the only crypto API of the service: Fernet, the
    // Keyring's internals and the refusal rule are imported from inside keyring/ only.
    files: ["service/src/**/*.ts"],
    ignores: ["service/src/keyring/**", "service/src/gen/**"],
    rules: {
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              group: ["**/keyring/keyring*", "**/keyring/fernet*", "**/keyring/refusal*"],
              message: "Import the keyring's barrier (keyring/index.js) instead: it is the only crypto API of the service.",
            },
          ],
        },
      ],
    },
  },
  {
    // Only the command-line entry points print to the console; the service logs through pino.
    files: ["service/src/**/*.ts"],
    ignores: ["service/src/cli/**", "service/src/main.ts"],
    rules: { "no-console": "error" },
  },
);
