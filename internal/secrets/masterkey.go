package secrets

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/secretfile"
)

// KeySize is the length of the master key in bytes (AES-256).
const KeySize = 32

const keyHint = "generate one with `head -c 32 /dev/urandom | base64`"

// LoadMasterKey decodes a master key given as standard base64 of exactly
// 32 bytes. Surrounding white space is ignored. The key never appears in
// an error message.
func LoadMasterKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, domain.Errorf(domain.Invalid, "master key is empty: %s", keyHint)
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		// err names the offending byte offset, never the key's content.
		return nil, domain.Errorf(domain.Invalid,
			"master key is not valid base64 (standard alphabet, with padding): %v; %s", err, keyHint)
	}
	if len(key) != KeySize {
		return nil, domain.Errorf(domain.Invalid,
			"master key is %d bytes after base64 decoding; it must be exactly %d bytes (AES-256): %s",
			len(key), KeySize, keyHint)
	}
	return key, nil
}

// LoadOrCreateMasterKeyFile reads the base64 master key in path. When the
// file does not exist (dev mode, first run) it creates it, and its
// directory, with a fresh random key and mode 0600. A key file that group
// or others may access is refused.
func LoadOrCreateMasterKeyFile(path string) ([]byte, error) {
	if path == "" {
		return nil, domain.Errorf(domain.Invalid, "master key file: no path given")
	}
	if err := createKeyFile(path); err != nil {
		return nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, domain.Errorf(domain.Invalid, "master key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, domain.Errorf(domain.Invalid,
			"master key file %s has mode %04o, which gives group or others access to it; run `chmod 600 %s` (and consider the key exposed)",
			path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	key, err := LoadMasterKey(string(b))
	if err != nil {
		var de *domain.Error
		if errors.As(err, &de) {
			return nil, domain.Errorf(de.Code, "master key file %s: %s", path, de.Message)
		}
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	return key, nil
}

// createKeyFile writes a new random key to path unless the file exists.
// The key is written to a temporary file first and then hard-linked into
// place, which fails if path exists: two processes starting at once agree
// on one key, and nobody ever reads a half-written file.
func createKeyFile(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("master key file %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("master key file %s: create directory: %w", path, err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("master key file %s: random key: %w", path, err)
	}
	if _, err := secretfile.Create(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n")); err != nil {
		return fmt.Errorf("master key file %s: %w", path, err)
	}
	return nil
}
