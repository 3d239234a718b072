// The barrier: the only crypto API the rest of the service may import (eslint refuses imports of
// keyring/keyring.ts, keyring/fernet.ts or keyring/refusal.ts from outside this folder). What
// goes in or out of storage passes through a Keyring: sealing with the primary master key and
// binding to the row, opening with every configured key after checking the binding, and the one
// DATA_LOSS answer for a key that is refused. Jobs that read and write the database with it
// (re-encryption, verification, binding) live outside this folder (credentials/rewrap.ts).
export { BindingError, createKeyring, DecryptError, generateMasterKey, Keyring, MasterKeyError, type Admitted, type BoundRow } from "./keyring.js";
export { openStored, refusalError, refusalOf, type Refusal } from "./refusal.js";
