import { ServiceError } from "../errors.js";
import { BindingError, DecryptError, type BoundRow, type Keyring } from "./keyring.js";

/** Why a stored key is refused: no configured master key opens it, or it is not bound to its row. */
export type Refusal = "decrypt" | "binding";

/** The refusal an error of the keyring stands for; undefined for any other error. */
export function refusalOf(error: unknown): Refusal | undefined {
  return error instanceof DecryptError ? "decrypt" : error instanceof BindingError ? "binding" : undefined;
}

/** The one answer to a refused stored key: DATA_LOSS, never anything softer (never a fallback to the environment's key). */
export function refusalError(refusal: Refusal, credentialId: string, keyId: string): ServiceError {
  return refusal === "decrypt"
    ? new ServiceError(
        "data_loss",
        `credential "${credentialId}" cannot be decrypted with the configured MASTER_KEY (it was encrypted under key ${keyId})`,
        undefined,
        undefined,
        "KEY_UNDECRYPTABLE",
      )
    : new ServiceError(
        "data_loss",
        `credential "${credentialId}" is refused: its stored key is not bound to its row (the ciphertext, organization, provider or api_base was changed outside the service); run npm run verify-keys and re-enter the key`,
        undefined,
        undefined,
        "KEY_NOT_BOUND",
      );
}

/** A stored key, opened after its row binding is checked; a refused one is the DATA_LOSS of refusalError(). */
export function openStored(keyring: Keyring, row: BoundRow, token: string, keyId: string, binding: string | null): string {
  try {
    return keyring.decryptBound(row, token, keyId, binding);
  } catch (error) {
    const refusal = refusalOf(error);
    if (refusal !== undefined) throw refusalError(refusal, row.id, keyId);
    throw error;
  }
}
