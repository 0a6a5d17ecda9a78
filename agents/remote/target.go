package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Target is one machine as an agent reaches it. Secrets stay in memory
// only: they are never logged and never put in errors, and Target's own
// formatting (String, GoString, MarshalJSON) leaves them out.
type Target struct {
	Host string
	Port int // 22 when zero
	User string

	// Password is used to log in when PrivateKey is empty, and for sudo
	// (sent on stdin to `sudo -S`) whenever it is set and the user is not
	// root. One of Password and PrivateKey is required.
	Password string
	// PrivateKey is an unencrypted private key in PEM form (OpenSSH, PKCS#1,
	// PKCS#8 or SEC 1).
	PrivateKey []byte

	// HostKey is the pinned public host key in authorized_keys format
	// ("ssh-ed25519 AAAA…"); required.
	HostKey string
}

// String is "user@host:port".
func (t Target) String() string { return t.User + "@" + t.addr() }

// GoString keeps %#v from printing the secrets.
func (t Target) GoString() string {
	return fmt.Sprintf("remote.Target{Host:%q, Port:%d, User:%q, HostKey:%q}", t.Host, t.port(), t.User, t.HostKey)
}

// MarshalJSON keeps structured logs and API responses from carrying the
// secrets: only host, port, user and host key are written.
func (t Target) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Host    string `json:"host"`
		Port    int    `json:"port"`
		User    string `json:"user"`
		HostKey string `json:"host_key,omitempty"`
	}{t.Host, t.port(), t.User, t.HostKey})
}

func (t Target) port() int {
	if t.Port == 0 {
		return 22
	}
	return t.Port
}

// addr is "host:port" (IPv6 hosts in brackets), the key of per-host limits
// and statistics.
func (t Target) addr() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.port())) }

// wrap prefixes err with "ssh user@host:port: op: ", the form of every
// error the package returns, except a host key mismatch, which is returned
// as is (its message names the host and says what to do).
func (t Target) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var mismatch *HostKeyMismatchError
	if errors.As(err, &mismatch) {
		return mismatch
	}
	return fmt.Errorf("ssh %s@%s:%d: %s: %w", t.User, t.Host, t.port(), op, err)
}

// connKey identifies the connection a target may share: the same login at
// the same address with the same credential and pin. The secrets enter only
// through a hash.
func (t Target) connKey() string {
	h := sha256.New()
	for _, b := range [][]byte{[]byte(t.Password), t.PrivateKey, []byte(t.HostKey)} {
		binary.Write(h, binary.BigEndian, uint64(len(b)))
		h.Write(b)
	}
	return t.User + "@" + t.addr() + "#" + hex.EncodeToString(h.Sum(nil)[:16])
}

// check validates t and parses its pinned host key.
func (t Target) check() (ssh.PublicKey, error) {
	switch {
	case t.Host == "":
		return nil, fmt.Errorf("target has no host")
	case t.Port < 0 || t.Port > 65535:
		return nil, fmt.Errorf("port %d is out of range", t.Port)
	case t.User == "":
		return nil, fmt.Errorf("target has no login user")
	case t.Password == "" && len(t.PrivateKey) == 0:
		return nil, fmt.Errorf("target has neither a password nor a private key")
	case strings.TrimSpace(t.HostKey) == "":
		return nil, fmt.Errorf("no pinned host key: register the machine with its host key (remote.ScanHostKey reads it for confirmation)")
	}
	pin, err := parseHostKey(t.HostKey)
	if err != nil {
		return nil, fmt.Errorf("pinned host key: %w", err)
	}
	return pin, nil
}

// parseHostKey parses one key in authorized_keys format.
func parseHostKey(s string) (ssh.PublicKey, error) {
	key, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("not a public key in authorized_keys format (\"ssh-ed25519 AAAA…\"): %w", err)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("more than one key given; pin exactly one")
	}
	if _, ok := key.(*ssh.Certificate); ok {
		return nil, errors.New("a certificate cannot be pinned; pin the host's plain public key")
	}
	return key, nil
}

// Fingerprint returns the SHA-256 fingerprint ("SHA256:…", as ssh-keygen -l
// prints it) of a public key in authorized_keys format.
func Fingerprint(authorizedKey string) (string, error) {
	key, err := parseHostKey(authorizedKey)
	if err != nil {
		return "", err
	}
	return ssh.FingerprintSHA256(key), nil
}

// HostKeyMismatchError says that a machine offered a host key other than
// the pinned one. Nothing was run on it: the check happens before
// authentication.
type HostKeyMismatchError struct {
	Host    string // "host:port"
	Pinned  string // fingerprint of the pinned key, "SHA256:…"
	Offered string // fingerprint of the offered key; empty when the server has no key of the pinned type
	// PinnedType is the pinned key's type ("ssh-ed25519") and ServerTypes
	// the host key algorithms the server offered, set when Offered is empty.
	PinnedType  string
	ServerTypes []string
}

func (e *HostKeyMismatchError) Error() string {
	what := "offered " + e.Offered
	if e.Offered == "" {
		what = fmt.Sprintf("the server has no %s key any more (it offers %s)", e.PinnedType, strings.Join(e.ServerTypes, ", "))
	}
	return fmt.Sprintf("host key of %s changed: pinned %s, %s; no command was run. "+
		"If the machine was reinstalled, re-register it with its new host key; otherwise someone may be intercepting the connection",
		e.Host, e.Pinned, what)
}

// hostKeyAlgorithms lists the algorithms that can prove possession of key,
// so that the client asks the server for that key and no other.
func hostKeyAlgorithms(key ssh.PublicKey) []string {
	if key.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{key.Type()}
}

// pinnedHostKey returns a callback that accepts only pin, comparing the
// marshalled keys in constant time.
func pinnedHostKey(pin ssh.PublicKey) ssh.HostKeyCallback {
	want := pin.Marshal()
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		if subtle.ConstantTimeCompare(key.Marshal(), want) == 1 {
			return nil
		}
		return &HostKeyMismatchError{Host: hostname, Pinned: ssh.FingerprintSHA256(pin), Offered: ssh.FingerprintSHA256(key)}
	}
}

// scanAlgorithms is the order in which ScanHostKey asks for a host key:
// ed25519 first, as ssh-keyscan and OpenSSH's client prefer it.
var scanAlgorithms = []string{
	ssh.KeyAlgoED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA,
}

var errScanned = errors.New("host key read")

// ScanHostKey connects to host:port, reads the host key the server offers
// (ed25519 preferred) and hangs up before authenticating. It returns the key
// in authorized_keys format, to be shown to an operator and pinned when the
// machine is registered. It trusts the network at that moment; compare the
// [Fingerprint] with the one the machine's console shows
// (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`).
func ScanHostKey(ctx context.Context, host string, port int) (string, error) {
	if port == 0 {
		port = 22
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	var got ssh.PublicKey
	cfg := &ssh.ClientConfig{
		User:              "dmgr-host-key-scan",
		HostKeyAlgorithms: scanAlgorithms,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			got = key
			return errScanned
		},
	}
	nc, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("scan host key of %s: %w", addr, err)
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		nc.SetDeadline(d)
	} else {
		nc.SetDeadline(time.Now().Add(30 * time.Second))
	}
	c, _, _, err := ssh.NewClientConn(nc, addr, cfg)
	if err == nil {
		c.Close()
		return "", fmt.Errorf("scan host key of %s: the handshake finished without showing a host key", addr)
	}
	if got == nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("scan host key of %s: %w", addr, err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(got))), nil
}

// authMethods turns the target's credential into SSH auth methods: the key
// first, then the password (also answering keyboard-interactive prompts,
// for servers that offer only that).
func (t Target) authMethods() ([]ssh.AuthMethod, error) {
	var methods []ssh.AuthMethod
	if len(t.PrivateKey) > 0 {
		signer, err := ssh.ParsePrivateKey(t.PrivateKey)
		if err != nil {
			var missing *ssh.PassphraseMissingError
			if errors.As(err, &missing) {
				return nil, fmt.Errorf("private key is encrypted with a passphrase; store it unencrypted (dmgr encrypts stored secrets itself)")
			}
			// ssh's parse errors describe the format, never the key bytes.
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		methods = append(methods, ssh.PublicKeys(signer))
	}
	if t.Password != "" {
		pw := t.Password
		methods = append(methods,
			ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, questions []string, echos []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range questions {
					if !echos[i] { // a hidden prompt asks for the password
						answers[i] = pw
					}
				}
				return answers, nil
			}))
	}
	return methods, nil
}
