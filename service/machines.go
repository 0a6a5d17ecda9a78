package service

import (
	"bytes"
	"context"
	"net"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/secrets"
)

// RegisterMachineRequest is RegisterMachine with the plaintext credential,
// which goes to the vault and never into an event.
type RegisterMachineRequest struct {
	Host       string
	SSHPort    int
	User       string
	Password   string
	PrivateKey string
	Labels     domain.Labels
	// HostKey pins the machine's SSH host key (one authorized_keys line);
	// empty means: read it from the machine now.
	HostKey string
}

// RegisterMachine stores the credential encrypted and records the machine.
func (s *Service) RegisterMachine(ctx context.Context, meta Meta, r RegisterMachineRequest) (Accepted, error) {
	kind, secret := secrets.Kind(""), ""
	switch {
	case r.Password != "" && r.PrivateKey != "":
		return Accepted{}, domain.Errorf(domain.Invalid, "give either password or private_key, not both")
	case r.Password != "":
		kind, secret = secrets.Kind(domain.CredentialPassword), r.Password
	case r.PrivateKey != "":
		kind, secret = secrets.Kind(domain.CredentialPrivateKey), r.PrivateKey
	default:
		return Accepted{}, domain.Errorf(domain.Invalid, "a credential is required: give password or private_key")
	}
	cmd := domain.RegisterMachine{Host: r.Host, SSHPort: r.SSHPort, User: r.User, Labels: r.Labels,
		Credential: domain.CredentialRef{ID: "pending", Kind: string(kind)},
		HostKey:    domain.HostKey{Key: "pending", Fingerprint: "SHA256:pending"}}
	// Validate before the host is contacted and the secret is stored, so
	// bad input writes nothing and costs no connection.
	m, err := s.loadMachine(ctx, r.Host)
	if err != nil {
		return Accepted{}, err
	}
	if _, err := domain.DecideRegisterMachine(m.state, cmd); err != nil {
		return Accepted{}, err
	}
	if cmd.HostKey, err = s.pinHostKey(ctx, r); err != nil {
		return Accepted{}, err
	}
	credID, err := s.vault.Put(ctx, kind, []byte(secret), r.Host) // bound to the machine: opens for it only
	if err != nil {
		return Accepted{}, err
	}
	cmd.Credential.ID = credID
	acc, err := s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		m, err := s.loadMachine(ctx, r.Host)
		if err != nil {
			return decision{}, err
		}
		evs, err := domain.DecideRegisterMachine(m.state, cmd)
		return decision{domain.AggregateMachine, r.Host, evs, eventstore.Expect{LastSeq: m.lastSeq, Version: m.version}}, err
	})
	if err != nil {
		if derr := s.vault.Delete(context.WithoutCancel(ctx), credID); derr != nil {
			s.log.Error().Err(derr).Str("credential", credID).Msg("remove credential of a refused machine registration")
		}
		return Accepted{}, err
	}
	return acc, nil
}

// pinHostKey returns the host key to pin: the one given, or the one the
// machine offers now (trust on first use, recorded in the event).
func (s *Service) pinHostKey(ctx context.Context, r RegisterMachineRequest) (domain.HostKey, error) {
	key := strings.TrimSpace(r.HostKey)
	if key == "" {
		if err := domain.ValidateHost(r.Host); err != nil {
			return domain.HostKey{}, err
		}
		port := r.SSHPort
		if port == 0 {
			port = 22
		}
		if s.scanHostKey == nil {
			return domain.HostKey{}, domain.Errorf(domain.Invalid, "host_key is required: this server cannot read host keys itself")
		}
		scanned, err := s.scanHostKey(ctx, r.Host, port)
		if err != nil {
			return domain.HostKey{}, domain.Errorf(domain.Invalid, "cannot read the SSH host key of %s: %v; check host and ssh_port, or give host_key (the line from the machine's /etc/ssh/ssh_host_ed25519_key.pub)",
				net.JoinHostPort(r.Host, strconv.Itoa(port)), err)
		}
		key = scanned
	}
	pub, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(key))
	if err != nil || len(bytes.TrimSpace(rest)) > 0 {
		return domain.HostKey{}, domain.Errorf(domain.Invalid, "host_key is not one public key in authorized_keys form (\"ssh-ed25519 AAAA…\")")
	}
	return domain.HostKey{Key: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), Fingerprint: ssh.FingerprintSHA256(pub)}, nil
}

// RemoveMachine takes an unused machine out of the inventory.
func (s *Service) RemoveMachine(ctx context.Context, meta Meta, host string) (Accepted, error) {
	return s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		w, err := s.loadWorld(ctx, eventstore.AllSubjects)
		if err != nil {
			return decision{}, err
		}
		evs, err := domain.DecideRemoveMachine(w.World, domain.RemoveMachine{Host: host})
		return decision{domain.AggregateMachine, host, evs, w.expect(domain.AggregateMachine, host)}, err
	})
}

func (s *Service) loadMachine(ctx context.Context, host string) (loaded[domain.Machine], error) {
	return load(ctx, s, domain.AggregateMachine, host, domain.EvolveMachine)
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
