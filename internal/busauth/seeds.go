package busauth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/nkeys"

	"github.com/dmgr/dmgr/internal/secretfile"
)

// User is an identity with its nkey: the public key, which the NATS server
// is configured with, and the file holding the seed, which only the
// identity's processes read.
type User struct {
	Identity
	PublicKey string
	SeedFile  string
	Created   bool // EnsureSeeds wrote the seed file just now
}

// EnsureDir makes dir, mode 0700, or, when it exists, checks that it is a
// directory and takes group and other access away from it.
func EnsureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("credentials directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("credentials directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("credentials directory %s is not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("credentials directory %s: make it 0700: %w", dir, err)
		}
	}
	return nil
}

// EnsureSeeds makes dir (EnsureDir) and returns a user for each identity:
// the seed in dir/<id.SeedFileName()> when the file exists, a new seed
// written there (mode 0600) when it does not. A seed file that others may
// read, or that holds no user seed, is an error.
func EnsureSeeds(dir string, ids ...Identity) ([]User, error) {
	if err := EnsureDir(dir); err != nil {
		return nil, err
	}
	users := make([]User, 0, len(ids))
	seen := map[string]bool{}
	for _, id := range ids {
		if err := id.Validate(); err != nil {
			return nil, err
		}
		name := id.SeedFileName()
		if seen[name] {
			continue
		}
		seen[name] = true
		path := filepath.Join(dir, name)
		created, err := createSeedFile(path, id)
		if err != nil {
			return nil, err
		}
		u, err := LoadSeed(path, id)
		if err != nil {
			return nil, err
		}
		u.Created = created
		users = append(users, u)
	}
	return users, nil
}

// LoadSeed reads the seed file of id at path and returns the user: the
// file must be a regular file that neither group nor others may access,
// holding an nkey user seed. The seed itself is not kept.
func LoadSeed(path string, id Identity) (User, error) {
	if err := id.Validate(); err != nil {
		return User{}, err
	}
	kp, err := readSeed(path)
	if err != nil {
		return User{}, err
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return User{}, fmt.Errorf("NATS seed file %s: %w", path, err)
	}
	return User{Identity: id, PublicKey: pub, SeedFile: path}, nil
}

// readSeed checks the file's type and mode and parses the user seed in it.
func readSeed(path string) (nkeys.KeyPair, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("NATS seed file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("NATS seed file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("NATS seed file %s has mode %04o, which gives group or others access to it; run `chmod 600 %s` (and consider the seed exposed: make a new one)",
			path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("NATS seed file: %w", err)
	}
	defer wipe(b)
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return nil, fmt.Errorf("NATS seed file %s holds no nkey seed (%v): it is the file `dmgr bus init` or `dmgr dev` wrote", path, err)
	}
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		kp.Wipe()
		return nil, fmt.Errorf("NATS seed file %s holds a seed that is not a user seed (it must start with SU)", path)
	}
	return kp, nil
}

// createSeedFile writes a new user seed to path unless the file exists.
// It is written to a temporary file (0600) and hard-linked into place,
// which fails if path exists: two processes starting at once agree on one
// seed, and nobody reads a half-written file.
func createSeedFile(path string, id Identity) (bool, error) {
	if _, err := os.Lstat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("NATS seed file: %w", err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return false, fmt.Errorf("NATS seed for %s: %w", id, err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return false, fmt.Errorf("NATS seed for %s: %w", id, err)
	}
	defer wipe(seed)
	var body bytes.Buffer
	fmt.Fprintf(&body, "# dmgr NATS nkey seed of the %s role. Secret: whoever holds it is %s on the bus.\n", id, id)
	body.Write(seed)
	body.WriteByte('\n')
	defer wipe(body.Bytes())

	created, err := secretfile.Create(path, body.Bytes())
	if err != nil {
		return false, fmt.Errorf("NATS seed file %s: %w", path, err)
	}
	return created, nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}
