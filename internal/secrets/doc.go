// Package secrets keeps SSH passwords and private keys encrypted in a
// JetStream key-value bucket and hands out credential ids in their place.
//
// Events, logs and API answers carry only the id ("cred-<uuid v7>"); the
// plaintext exists in memory between Vault.Get and its use by the SSH
// client. Each value is sealed with AES-256-GCM under the master key, with a
// fresh random 12-byte nonce and the credential id, kind and owner as
// additional authenticated data, so a value copied to another id or
// relabelled as another kind or owner fails to open.
//
// A credential belongs to one machine, its owner (the machine's host): Put
// takes the owner and Get the machine the caller is about to log in to, and
// Get refuses a credential of any other machine, so a credential id can never
// be used to send one machine's secret to another.
//
// The master key is 32 random bytes, given base64-encoded (LoadMasterKey),
// or, in dev mode, kept in a 0600 file that is created on first use
// (LoadOrCreateMasterKeyFile). Losing the key loses every credential.
package secrets
