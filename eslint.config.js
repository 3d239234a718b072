import js from "@eslint/js";
import tseslint from "typescript-eslint";

// no-restricted-imports for service/src: a later config object setting the rule for the same files replaces it
// (flat config does not merge a rule's options), so every restriction is listed here and combined below.
const keyringBarrier = {
  group: ["**/keyring/keyring*", "**/keyring/fernet*", "**/keyring/refusal*"],
  message: "Import the keyring's barrier (keyring/index.js) instead: it is the only crypto API of the service.",
};
// Every change goes through runChange (db/change.ts): it alone writes audit rows, notifies and opens write transactions.
const changeWriters = [
  {
    group: ["**/audit-store*"],
    importNames: ["recordAudit", "recordAudits"],
    message: "Write audit rows through runChange (db/change.ts): declare them with audit(event).",
  },
  {
    group: ["**/invalidation*"],
    importNames: ["publishInvalidation"],
    message: "Notify through runChange (db/change.ts): declare what the change makes stale with invalidate(change).",
  },
  {
    group: ["**/orm*"],
    importNames: ["inTransaction"],
    message: "Run changes with runChange (db/change.ts): one transaction with its audit rows and notifications.",
  },
];

export default tseslint.config(
  { ignores: ["node_modules/", "dist/", "packages/wire/src/gen/", ".data/", "coverage/", "portal/build/", "portal/.svelte-kit/", "portal/.build-lock/"] },
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
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: { "@typescript-eslint/no-floating-promises": "error" },
  },
  {
    // The keyring's barrier (keyring/index.ts) is the only crypto API of the service: Fernet, the
    // Keyring's internals and the refusal rule are imported from inside keyring/ only. And the audit
    // writers, the notifier and inTransaction are runChange's alone.
    files: ["service/src/**/*.ts"],
    ignores: ["service/src/keyring/**"],
    rules: { "no-restricted-imports": ["error", { patterns: [keyringBarrier, ...changeWriters] }] },
  },
  {
    files: ["service/src/db/change.ts"],
    rules: { "no-restricted-imports": ["error", { patterns: [keyringBarrier] }] },
  },
  {
    files: ["service/src/keyring/**/*.ts"],
    rules: { "no-restricted-imports": ["error", { patterns: changeWriters }] },
  },
  {
    // Only the command-line entry points print to the console; the service logs through pino.
    files: ["service/src/**/*.ts"],
    ignores: ["service/src/cli/**", "service/src/main.ts"],
    rules: { "no-console": "error" },
  },
  ...boundaries(),
);

/**
 * The service and the portal share code only through @provider-credentials/wire (packages/wire):
 * neither imports the other's files, and the package imports neither. no-restricted-syntax, not
 * no-restricted-imports: service/src/** sets that rule above, and a second config object setting
 * it for the same files would replace those restrictions instead of adding to them.
 */
function boundaries() {
  // A relative specifier climbing out to the repository's top-level folder (written without "/",
  // which a selector's regular expression cannot hold).
  const into = (folder) => `/^(\\.\\.\\x2F)+${folder}\\x2F/`;
  const refuse = (folder, message) =>
    ["ImportDeclaration", "ExportAllDeclaration", "ExportNamedDeclaration", "ImportExpression"].map((node) => ({
      selector: `${node} > Literal.source[value=${into(folder)}]`,
      message,
    }));
  const shared = "Share it through @provider-credentials/wire (packages/wire) instead.";
  return [
    { files: ["service/**/*.ts"], rules: { "no-restricted-syntax": ["error", ...refuse("portal", `The service imports nothing from portal/. ${shared}`)] } },
    {
      files: ["portal/**/*.{ts,js}"],
      rules: { "no-restricted-syntax": ["error", ...refuse("service", `The portal imports nothing from service/. ${shared}`)] },
    },
    {
      files: ["packages/**/*.ts"],
      rules: {
        "no-restricted-syntax": [
          "error",
          ...refuse("service", "The wire package imports neither the service nor the portal."),
          ...refuse("portal", "The wire package imports neither the service nor the portal."),
        ],
      },
    },
  ];
}
