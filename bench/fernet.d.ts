// The npm `fernet` package (0.4.0) ships no types: just what the keyring comparison uses.
declare module "fernet" {
  interface Secret {
    signingKeyHex: string;
    encryptionKeyHex: string;
  }
  interface TokenOptions {
    secret?: Secret;
    token?: string;
    /** Seconds; the package's default is 60, and 0 disables the check. */
    ttl?: number;
  }
  interface Token {
    decode(token?: string): string;
    encode(message?: string): string;
  }
  const fernet: {
    Secret: new (base64Key: string) => Secret;
    Token: new (options?: TokenOptions) => Token;
  };
  export default fernet;
}
