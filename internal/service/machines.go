package service

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/secrets"
)

// Deadlines of the network calls a registration makes.
const (
	resolveTimeout = 5 * time.Second
	scanTimeout    = 10 * time.Second
	// vaultTimeout bounds a vault call made after the request's own
	// context may have ended (cleaning up a refused registration or the
	// credential of a removed machine).
	vaultTimeout = 10 * time.Second
)

// RegisterMachineRequest is RegisterMachine with the plaintext credential,
// which goes to the vault and never into an event.
type RegisterMachineRequest struct {
	Host       string
	SSHPort    int
	User       string
	Password   string
	PrivateKey string
	// PrivateKeyPassphrase decrypts an encrypted PrivateKey at
	// registration; the vault keeps the key decrypted (it seals every
	// secret itself) and never the passphrase.
	PrivateKeyPassphrase string
	Labels               domain.Labels
	// HostKey pins the machine's SSH host key (one authorized_keys line);
	// empty means: read it from the machine now.
	HostKey string
	// Group will own the machine ("": DefaultGroup).
	Group string
}

// RegisterMachine checks the credential, resolves the host once, refuses a
// machine already registered under another identity, pins the host key,
// stores the credential encrypted and records the machine. Bad input is
// refused before any connection is made and before the vault is written.
func (s *Service) RegisterMachine(ctx context.Context, meta Meta, r RegisterMachineRequest) (Accepted, error) {
	meta = s.complete(meta)
	meta.Group = domain.OwnerGroup(r.Group)
	if err := s.allowInGroup(ctx, meta, "register machine "+r.Host+" in group "+meta.Group, "", r.Host); err != nil {
		return Accepted{}, err
	}
	kind, secret, err := parseCredential(r)
	if err != nil {
		return Accepted{}, err
	}
	cmd := domain.RegisterMachine{Host: r.Host, SSHPort: r.SSHPort, User: r.User, Labels: r.Labels, Group: meta.Group,
		Credential: domain.CredentialRef{ID: "pending", Kind: string(kind)},
		HostKey:    domain.HostKey{Key: "pending", Fingerprint: "SHA256:pending"}}
	if err := domain.ValidateRegisterMachine(cmd); err != nil {
		return Accepted{}, err
	}
	if cmd.SSHPort == 0 {
		cmd.SSHPort = 22
	}
	if cmd.Address, err = s.resolveHost(ctx, r.Host); err != nil {
		return Accepted{}, err
	}
	// The identity checks (already registered, same address and port)
	// before the host is contacted.
	if _, err := s.decideRegister(ctx, cmd); err != nil {
		return Accepted{}, err
	}
	if cmd.HostKey, err = s.pinHostKey(ctx, r.HostKey, cmd.Address, cmd.SSHPort); err != nil {
		return Accepted{}, err
	}
	release, err := s.admitInventory(ctx, "registration of "+cmd.Host)
	if err != nil {
		return Accepted{}, err
	}
	defer release()
	credID, err := s.vault.Put(ctx, kind, secret, cmd.Host) // bound to the machine: opens for it only
	if err != nil {
		return Accepted{}, err
	}
	cmd.Credential.ID = credID
	acc, err := s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		return s.decideRegister(ctx, cmd)
	})
	if err != nil {
		s.deleteCredential(ctx, credID, "remove credential of a refused machine registration")
		return Accepted{}, err
	}
	return acc, nil
}

// decideRegister decides a registration on what it touches: the machine,
// its identity claims (domain/reservations.go) and the machines holding
// them. Its decision takes the claims atomically with the registration.
func (s *Service) decideRegister(ctx context.Context, cmd domain.RegisterMachine) (decision, error) {
	m, err := s.machines.read(ctx, cmd.Host)
	if err != nil {
		return decision{}, err
	}
	claims, err := s.claims.readEach(ctx, domain.MachineClaims(cmd.Host, cmd.Address, cmd.SSHPort))
	if err != nil {
		return decision{}, err
	}
	machines := map[string]*domain.Machine{}
	if m.exists {
		machines[cmd.Host] = m.ptr()
	}
	var holders []string
	for _, c := range claims {
		if c.state.Owner != "" && c.state.Owner != cmd.Host {
			holders = append(holders, c.state.Owner)
		}
	}
	held, err := s.machines.readEach(ctx, holders)
	if err != nil {
		return decision{}, err
	}
	for host, h := range held {
		if h.exists {
			machines[host] = h.ptr()
		}
	}
	evs, err := domain.DecideRegisterMachine(machines, cmd)
	if err != nil {
		return decision{}, err
	}
	d := one(domain.AggregateMachine, cmd.Host, evs, m.expect())
	for _, id := range sortedKeys(claims) {
		d.also = append(d.also, pending{aggregateType: domain.AggregateClaim, aggregateID: id, events: []domain.Event{domain.ClaimTaken{Claim: id, Owner: cmd.Host}}, expect: claims[id].expect()})
	}
	return d, nil
}

// decideRemove decides a machine's removal on what it touches: the
// machine, the clusters it lists (the only ones that may use it) and its
// claims, which the removal releases.
func (s *Service) decideRemove(ctx context.Context, host string) (decision, *domain.Machine, error) {
	m, err := s.machines.read(ctx, host)
	if err != nil {
		return decision{}, nil, err
	}
	w := domain.NewWorld()
	if m.exists {
		w.Machines[host] = m.ptr()
	}
	users, err := s.clusters.readEach(ctx, m.state.Clusters)
	if err != nil {
		return decision{}, nil, err
	}
	for name, c := range users {
		if c.exists {
			w.Clusters[name] = c.ptr()
		}
	}
	evs, err := domain.DecideRemoveMachine(w, domain.RemoveMachine{Host: host})
	if err != nil {
		return decision{}, nil, err
	}
	d := one(domain.AggregateMachine, host, evs, m.expect())
	claims, err := s.claims.readEach(ctx, domain.ClaimsOf(m.ptr()))
	if err != nil {
		return decision{}, nil, err
	}
	for _, id := range sortedKeys(claims) {
		if c := claims[id]; c.state.Owner == host {
			d.also = append(d.also, pending{aggregateType: domain.AggregateClaim, aggregateID: id, events: []domain.Event{domain.ClaimReleased{Claim: id, Owner: host}}, expect: c.expect()})
		}
	}
	return d, m.ptr(), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// parseCredential checks the credential of a registration: exactly one of
// password and private key; a key that parses (decrypted with the
// passphrase when it is encrypted). It returns what the vault stores.
// Messages never quote the secret.
func parseCredential(r RegisterMachineRequest) (secrets.Kind, []byte, error) {
	switch {
	case r.Password != "" && r.PrivateKey != "":
		return "", nil, domain.Errorf(domain.Invalid, "give either password or private_key, not both")
	case r.PrivateKeyPassphrase != "" && r.PrivateKey == "":
		return "", nil, domain.Errorf(domain.Invalid, "private_key_passphrase is given without private_key")
	case r.Password != "":
		if len(r.Password) > secrets.MaxSecretSize {
			return "", nil, domain.Errorf(domain.Invalid, "password is %d bytes; at most %d are accepted", len(r.Password), secrets.MaxSecretSize)
		}
		if strings.IndexByte(r.Password, 0) >= 0 {
			return "", nil, domain.Errorf(domain.Invalid, "password contains a NUL character, which SSH cannot send")
		}
		return secrets.KindPassword, []byte(r.Password), nil
	case r.PrivateKey != "":
		key, err := parsePrivateKey([]byte(r.PrivateKey), r.PrivateKeyPassphrase)
		if err != nil {
			return "", nil, err
		}
		return secrets.KindPrivateKey, key, nil
	}
	return "", nil, domain.Errorf(domain.Invalid, "a credential is required: give password or private_key")
}

// parsePrivateKey returns the key to store: pemKey as given when it is not
// encrypted, the key decrypted with passphrase otherwise (in OpenSSH form).
func parsePrivateKey(pemKey []byte, passphrase string) ([]byte, error) {
	if len(pemKey) > secrets.MaxSecretSize {
		return nil, domain.Errorf(domain.Invalid, "private_key is %d bytes; at most %d are accepted", len(pemKey), secrets.MaxSecretSize)
	}
	block, rest := pem.Decode(pemKey)
	if block == nil {
		return nil, domain.Errorf(domain.Invalid, "private_key does not parse: no PEM block found; give the whole key file, from -----BEGIN OPENSSH PRIVATE KEY----- to its END line")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, domain.Errorf(domain.Invalid, "private_key does not parse: it has data after the key's END line; give one key")
	}
	raw, err := ssh.ParseRawPrivateKey(pemKey)
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing) && passphrase == "":
		return nil, domain.Errorf(domain.Invalid, "private_key is encrypted with a passphrase: give private_key_passphrase, or give the key unencrypted (dmgr encrypts stored credentials itself)")
	case errors.As(err, &missing):
		raw, err = ssh.ParseRawPrivateKeyWithPassphrase(pemKey, []byte(passphrase))
		if errors.Is(err, x509.IncorrectPasswordError) || (err != nil && strings.Contains(err.Error(), "decryption password incorrect")) {
			return nil, domain.Errorf(domain.Invalid, "private_key_passphrase does not decrypt private_key")
		}
		if err != nil {
			return nil, domain.Errorf(domain.Invalid, "private_key does not parse: %s", keyProblem(block.Type))
		}
		return marshalPrivateKey(raw)
	case err != nil:
		return nil, domain.Errorf(domain.Invalid, "private_key does not parse: %s", keyProblem(block.Type))
	case passphrase != "":
		return nil, domain.Errorf(domain.Invalid, "private_key is not encrypted: omit private_key_passphrase")
	}
	if _, err := ssh.NewSignerFromKey(raw); err != nil {
		return nil, domain.Errorf(domain.Invalid, "private_key does not parse: its key type cannot sign SSH logins")
	}
	return pemKey, nil
}

// keyProblem names what is wrong with a key that does not parse without
// quoting any of it (the block type is one of a fixed list or "other").
func keyProblem(blockType string) string {
	switch blockType {
	case "OPENSSH PRIVATE KEY", "RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY":
		return "the " + blockType + " block is malformed or of an unsupported algorithm"
	}
	return "the PEM block is not a private key; use an OpenSSH, PKCS#1, PKCS#8 or SEC 1 private key"
}

// marshalPrivateKey writes a decrypted key in OpenSSH form.
func marshalPrivateKey(raw any) ([]byte, error) {
	if _, err := ssh.NewSignerFromKey(raw); err != nil {
		return nil, domain.Errorf(domain.Invalid, "private_key does not parse: its key type cannot sign SSH logins")
	}
	block, err := ssh.MarshalPrivateKey(raw, "")
	if err != nil {
		return nil, domain.Errorf(domain.Invalid, "private_key: this key type cannot be stored decrypted; give the key unencrypted in OpenSSH form")
	}
	return pem.EncodeToMemory(block), nil
}

// resolveHost returns the address of a machine's host: the host itself when
// it is an IP address, otherwise what the name resolves to now (an IPv4
// address if it has one, the lowest of them; else the lowest IPv6). The
// name is not resolved again: every later connection uses this address.
func (s *Service) resolveHost(ctx context.Context, host string) (string, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		var dns *net.DNSError
		switch {
		case errors.As(err, &dns) && dns.IsNotFound:
			return "", domain.Errorf(domain.Invalid, "host %s does not resolve (no such host): give its IP address or a name the server can resolve", host)
		case errors.As(err, &dns) && (dns.IsTimeout || dns.IsTemporary), errors.Is(err, context.DeadlineExceeded):
			return "", domain.Errorf(domain.Unavailable, "host %s could not be resolved (the lookup timed out or failed for now); retry", host)
		}
		return "", domain.Errorf(domain.Invalid, "host %s could not be resolved: give its IP address", host)
	}
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			continue
		}
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	for _, list := range [][]netip.Addr{v4, v6} {
		if len(list) > 0 {
			slices.SortFunc(list, netip.Addr.Compare)
			return list[0].String(), nil
		}
	}
	return "", domain.Errorf(domain.Invalid, "host %s resolves to no address a machine can have", host)
}

// pinHostKey returns the host key to pin: the one given, or the one the
// machine offers now at address:port (trust on first use, recorded in the
// event). Reading it opens one TCP connection to the SSH port and speaks
// only SSH, up to the server's host key.
func (s *Service) pinHostKey(ctx context.Context, given, address string, port int) (domain.HostKey, error) {
	key := strings.TrimSpace(given)
	if key == "" {
		if s.scanHostKey == nil {
			return domain.HostKey{}, domain.Errorf(domain.Invalid, "host_key is required: this server cannot read host keys itself")
		}
		sctx, cancel := context.WithTimeout(ctx, scanTimeout)
		scanned, err := s.scanHostKey(sctx, address, port)
		cancel()
		if err != nil {
			addr := net.JoinHostPort(address, strconv.Itoa(port))
			if ctx.Err() != nil {
				return domain.HostKey{}, domain.Errorf(domain.Unavailable, "no SSH host key could be read from %s (the request ended)", addr)
			}
			return domain.HostKey{}, domain.Errorf(domain.Invalid, "no SSH host key could be read from %s (%s): check host and ssh_port, or give host_key (the line from the machine's /etc/ssh/ssh_host_ed25519_key.pub)",
				addr, scanProblem(err))
		}
		key = scanned
	}
	pub, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(key))
	if err != nil || len(bytes.TrimSpace(rest)) > 0 {
		return domain.HostKey{}, domain.Errorf(domain.Invalid, "host_key is not one public key in authorized_keys form (\"ssh-ed25519 AAAA…\")")
	}
	return domain.HostKey{Key: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), Fingerprint: ssh.FingerprintSHA256(pub)}, nil
}

// scanProblem is the class of a failed host key scan. It never quotes what
// the remote end sent, so registration cannot be used to read services.
func scanProblem(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return "connection failed"
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "version string"), strings.Contains(msg, "overflow"):
		return "not an SSH server"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return "the connection closed before an SSH host key was offered"
	}
	return "the SSH handshake failed"
}

// RemoveMachine takes an unused machine out of the inventory and deletes
// its credential from the vault.
func (s *Service) RemoveMachine(ctx context.Context, meta Meta, host string) (Accepted, error) {
	meta = s.complete(meta)
	if m, err := s.machines.read(ctx, host); err == nil && m.exists {
		meta.Group = m.state.Group
		if err := s.allowInGroup(ctx, meta, "remove machine "+host, "", host); err != nil {
			return Accepted{}, err
		}
	}
	release, err := s.admitInventory(ctx, "removal of "+host)
	if err != nil {
		return Accepted{}, err
	}
	defer release()
	var cred string
	acc, err := s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		d, m, err := s.decideRemove(ctx, host)
		if m != nil {
			cred = m.Credential.ID
		}
		return d, err
	})
	if err != nil {
		return Accepted{}, err
	}
	if cred != "" {
		s.deleteCredential(ctx, cred, "delete the credential of a removed machine (the machine is removed; delete the key by hand)")
	}
	return acc, nil
}

// admitInventory waits for a registration's or removal's turn
// (Config.MaxConcurrentRegistrations); release ends it. A request that
// ends while it waits is refused as unavailable, having written nothing.
func (s *Service) admitInventory(ctx context.Context, what string) (release func(), err error) {
	select {
	case s.inventory <- struct{}{}:
		return func() { <-s.inventory }, nil
	case <-ctx.Done():
		return nil, domain.Errorf(domain.Unavailable, "%s: gave up waiting for its turn behind other machine registrations: %v", what, context.Cause(ctx))
	}
}

// deleteCredential removes a credential, even after ctx ended; a failure
// is logged (with the id, never the secret).
func (s *Service) deleteCredential(ctx context.Context, id, what string) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), vaultTimeout)
	defer cancel()
	if err := s.vault.Delete(dctx, id); err != nil {
		s.log.Error().Err(err).Str("credential", id).Str("bucket", secrets.Bucket).Msg(what)
	}
}

func (s *Service) loadMachine(ctx context.Context, host string) (loaded[domain.Machine], error) {
	return loadedOf(s.machines.read(ctx, host))
}

// Machine returns one registered machine.
func (s *Service) Machine(ctx context.Context, host string) (domain.Machine, error) {
	m, err := s.loadMachine(ctx, host)
	if err != nil {
		return domain.Machine{}, err
	}
	if !m.state.Active() {
		return domain.Machine{}, domain.Errorf(domain.NotFound, "machine %s is not registered", host)
	}
	return *m.state, nil
}

// Machines lists the registered machines, sorted by host.
func (s *Service) Machines(ctx context.Context) ([]domain.Machine, error) {
	w, err := s.loadWorld(ctx, eventstore.TypeSubjects(domain.AggregateMachine))
	if err != nil {
		return nil, err
	}
	out := []domain.Machine{}
	for _, m := range w.Machines {
		if m.Active() {
			out = append(out, *m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out, nil
}

// BindCredentials binds the credential of every registered machine that an
// older dmgr stored bound to no machine (vault format 1) to that machine, as
// its committed registration names it, so that agents, which open a
// credential only for its own machine, can use it. Credentials bound
// already are left as they are. A server runs it once when it starts; it
// returns how many machines it checked and the first error (each is
// logged with its machine).
func (s *Service) BindCredentials(ctx context.Context) (int, error) {
	w, err := s.loadWorld(ctx, eventstore.TypeSubjects(domain.AggregateMachine))
	if err != nil {
		return 0, err
	}
	var first error
	n := 0
	for host, m := range w.Machines {
		if !m.Active() || m.Credential.ID == "" {
			continue
		}
		n++
		err := s.vault.Bind(ctx, m.Credential.ID, host)
		if domain.ErrorCode(err) == domain.Conflict {
			// Another server bound it meanwhile: check what it wrote.
			err = s.vault.Bind(ctx, m.Credential.ID, host)
		}
		if err != nil {
			s.log.Error().Err(err).Str("machine", host).Str("credential", m.Credential.ID).
				Msg("bind the machine's credential to it: agents will refuse it; register the machine again")
			if first == nil {
				first = fmt.Errorf("bind the credential of machine %s: %w", host, err)
			}
		}
	}
	return n, first
}

// allowInGroup authorizes a command of an operator of meta.Group (whose
// existence it checks first, for a principal), recording a refusal.
func (s *Service) allowInGroup(ctx context.Context, meta Meta, what, cluster, host string) error {
	if meta.Principal == nil {
		return nil
	}
	if _, ok := s.dir.Group(meta.Group); !ok && meta.Principal.SuperAdmin && meta.Group != domain.DefaultGroup {
		return domain.Errorf(domain.Invalid, "group %s does not exist: create it with POST /api/v1/groups", meta.Group)
	}
	return s.allow(ctx, meta, domain.Access{What: what, Group: meta.Group, Need: domain.MemberOperator, Write: true}, cluster, host)
}
