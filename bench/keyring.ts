// Decrypts per second of our Fernet (service/src/keyring/fernet.ts, node:crypto)
// against the npm `fernet` 0.4.0 package, in this one process, on the same
// token. A separate process because the npm package modifies String.prototype.
//
//   node --import tsx bench/keyring.ts '{"roundMs":2000,"rounds":3}'   prints one JSON line
import { performance } from "node:perf_hooks";
import fernet from "fernet";
import { decryptFernet, parseFernetKey } from "../service/src/keyring/fernet.js";
import { createKeyring, generateMasterKey } from "../service/src/keyring/keyring.js";
import { median } from "./report.js";

const { roundMs = 2_000, rounds = 3 } = JSON.parse(process.argv[2] ?? "{}") as { roundMs?: number; rounds?: number };

const masterKey = generateMasterKey();
const plaintext = "sk-bench-" + "x".repeat(40) + "Ab12"; // a typical 50-odd character provider key
const { token } = createKeyring(masterKey).encrypt(plaintext);
const key = parseFernetKey(masterKey);
const secret = new fernet.Secret(masterKey);

const ours = () => decryptFernet(key, token).toString("utf8");
// ttl: 0, or the package refuses tokens older than 60 s (its default).
const npm = () => new fernet.Token({ secret, token, ttl: 0 }).decode();

for (const [name, fn] of [
  ["ours", ours],
  ["npm fernet", npm],
] as const) {
  if (fn() !== plaintext) throw new Error(`${name} decrypted the token to something else`);
}

function perSecond(fn: () => string): number {
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < roundMs) {
    for (let i = 0; i < 100; i++) fn();
    n += 100;
    now = performance.now();
  }
  return n / ((now - start) / 1000);
}

// Warm both up, then alternate rounds so that neither gets a quieter moment of the machine.
perSecond(ours);
perSecond(npm);
const oursRounds: number[] = [];
const npmRounds: number[] = [];
for (let r = 0; r < rounds; r++) {
  oursRounds.push(perSecond(ours));
  npmRounds.push(perSecond(npm));
}
const oursPerSec = median(oursRounds);
const npmPerSec = median(npmRounds);
console.log(
  JSON.stringify({
    oursPerSec,
    npmPerSec,
    ratio: oursPerSec / npmPerSec,
    oursRounds,
    npmRounds,
    tokenChars: token.length,
    plaintextChars: plaintext.length,
  }),
);
