package domain

import (
	"regexp"
	"strings"
)

// Machine is a host that dmgr may deploy to, identified by its address.
type Machine struct {
	Host       string        `json:"host"`
	SSHPort    int           `json:"ssh_port"`
	User       string        `json:"user"`
	Credential CredentialRef `json:"credential"`
	Labels     Labels        `json:"labels"`
	HostKey    HostKey       `json:"host_key"`
	Status     string        `json:"status"`   // MachineStatusRegistered or MachineStatusRemoved
	Revision   uint64        `json:"revision"` // number of events folded in
}

// Machine statuses.
const (
	MachineStatusRegistered = "registered"
	MachineStatusRemoved    = "removed"
)

// Active reports whether the machine is registered (and not removed).
func (m *Machine) Active() bool { return m != nil && m.Status == MachineStatusRegistered }

// Labels place a machine in the failure-domain hierarchy.
type Labels struct {
	Region string `json:"region,omitempty"`
	Zone   string `json:"zone,omitempty"`
	Rack   string `json:"rack,omitempty"`
}

// Credential kinds.
const (
	CredentialPassword   = "password"
	CredentialPrivateKey = "private_key"
)

// CredentialRef names an encrypted secret in the vault; the secret itself
// never enters an event.
type CredentialRef struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
}

// HostKey is a machine's SSH host key, pinned when the machine is
// registered and checked on every connection.
type HostKey struct {
	Key         string `json:"key"`         // authorized_keys form: "ssh-ed25519 AAAA…"
	Fingerprint string `json:"fingerprint"` // "SHA256:…"
}

// RegisterMachine adds a machine to the inventory.
type RegisterMachine struct {
	Host       string
	SSHPort    int
	User       string
	Credential CredentialRef
	Labels     Labels
	HostKey    HostKey // read from the machine (or given) by the caller
}

// MachineRegistered: a machine joined the inventory.
type MachineRegistered struct {
	Host       string        `json:"host"`
	SSHPort    int           `json:"ssh_port"`
	User       string        `json:"user"`
	Credential CredentialRef `json:"credential"`
	Labels     Labels        `json:"labels"`
	HostKey    HostKey       `json:"host_key"`
}

// RemoveMachine takes a machine out of the inventory.
type RemoveMachine struct {
	Host string
}

// MachineRemoved: a machine left the inventory.
type MachineRemoved struct {
	Host string `json:"host"`
}

var labelRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// DecideRegisterMachine decides a RegisterMachine against the machine's
// current state (nil when the host was never registered).
func DecideRegisterMachine(m *Machine, c RegisterMachine) ([]Event, error) {
	if err := ValidateHost(c.Host); err != nil {
		return nil, err
	}
	if c.SSHPort == 0 {
		c.SSHPort = 22
	}
	if err := ValidatePort(c.SSHPort); err != nil {
		return nil, Errorf(Invalid, "ssh_port: %s", err)
	}
	if err := ValidateUser(c.User); err != nil {
		return nil, err
	}
	switch c.Credential.Kind {
	case CredentialPassword, CredentialPrivateKey:
	default:
		return nil, Errorf(Invalid, "credential kind %q is invalid: use %q or %q", c.Credential.Kind, CredentialPassword, CredentialPrivateKey)
	}
	if c.Credential.ID == "" {
		return nil, Errorf(Invalid, "credential id is required")
	}
	for _, l := range [...]struct{ name, value string }{{"region", c.Labels.Region}, {"zone", c.Labels.Zone}, {"rack", c.Labels.Rack}} {
		if l.value != "" && !labelRE.MatchString(l.value) {
			return nil, Errorf(Invalid, "label %s %q is invalid: use up to 63 letters, digits, '.', '_' or '-'", l.name, l.value)
		}
	}
	if c.HostKey.Key == "" || !strings.HasPrefix(c.HostKey.Fingerprint, "SHA256:") || strings.ContainsAny(c.HostKey.Key, "\r\n") {
		return nil, Errorf(Invalid, "the SSH host key of %s is required (one authorized_keys line with its SHA256 fingerprint)", c.Host)
	}
	if m.Active() {
		return nil, Errorf(Conflict, "machine %s is already registered", c.Host)
	}
	return []Event{MachineRegistered{Host: c.Host, SSHPort: c.SSHPort, User: c.User, Credential: c.Credential,
		Labels: c.Labels, HostKey: c.HostKey}}, nil
}

// DecideRemoveMachine refuses to remove a machine that a cluster uses.
func DecideRemoveMachine(w *World, c RemoveMachine) ([]Event, error) {
	m := w.Machines[c.Host]
	if !m.Active() {
		return nil, Errorf(NotFound, "machine %s is not registered", c.Host)
	}
	if users := w.ClustersOn(c.Host); len(users) > 0 {
		return nil, Errorf(Conflict, "machine %s is used by cluster %s: scale the instances in or destroy the cluster first", c.Host, strings.Join(users, ", "))
	}
	return []Event{MachineRemoved{Host: c.Host}}, nil
}

// EvolveMachine folds one event into a machine's state.
func EvolveMachine(m Machine, e Event) Machine {
	switch e := e.(type) {
	case MachineRegistered:
		m = Machine{Host: e.Host, SSHPort: e.SSHPort, User: e.User, Credential: e.Credential, Labels: e.Labels,
			HostKey: e.HostKey, Status: MachineStatusRegistered, Revision: m.Revision}
	case MachineRemoved:
		m.Status = MachineStatusRemoved
	}
	m.Revision++
	return m
}
