package domain

import (
	"net/netip"
	"regexp"
	"sort"
	"strings"
)

// Machine is a host that dmgr may deploy to, identified by its host (an
// IP address in canonical form or a host name) and reached at Address.
type Machine struct {
	Host string `json:"host"`
	// Address is the IP address dmgr connects to: the host itself when it
	// is an address, the address the name resolved to at registration
	// otherwise (never resolved again). Empty only in machines registered
	// before dmgr recorded it; use Addr.
	Address    string        `json:"address,omitempty"`
	SSHPort    int           `json:"ssh_port"`
	User       string        `json:"user"`
	Credential CredentialRef `json:"credential"`
	Labels     Labels        `json:"labels"`
	HostKey    HostKey       `json:"host_key"`
	// Group owns the machine (OwnerGroup of what its events named).
	Group    string `json:"group"`
	Status   string `json:"status"`   // MachineStatusRegistered or MachineStatusRemoved
	Revision uint64 `json:"revision"` // number of events folded in
	// Clusters lists the clusters that placed instances on the machine
	// and were not released since (see reservations.go): every cluster
	// that may have an instance here is in it.
	Clusters []string `json:"-"`
}

// Machine statuses.
const (
	MachineStatusRegistered = "registered"
	MachineStatusRemoved    = "removed"
)

// Active reports whether the machine is registered (and not removed).
func (m *Machine) Active() bool { return m != nil && m.Status == MachineStatusRegistered }

// Addr is the address to connect to: Address, or for a machine registered
// before addresses were recorded its host when that is an IP address ("" for
// a name).
func (m *Machine) Addr() string {
	if m.Address != "" {
		return m.Address
	}
	if a, err := netip.ParseAddr(m.Host); err == nil {
		return a.Unmap().String()
	}
	return ""
}

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
	Host string
	// Address is the IP address Host resolved to (the caller resolves a
	// name once); empty for an IP host, which is its own address.
	Address    string
	SSHPort    int
	User       string
	Credential CredentialRef
	Labels     Labels
	HostKey    HostKey // read from the machine (or given) by the caller
	Group      string  // the group that will own it ("" is DefaultGroup)
}

// MachineRegistered: a machine joined the inventory.
type MachineRegistered struct {
	Host       string        `json:"host"`
	Address    string        `json:"address,omitempty"` // absent in events written before it was recorded
	SSHPort    int           `json:"ssh_port"`
	User       string        `json:"user"`
	Credential CredentialRef `json:"credential"`
	Labels     Labels        `json:"labels"`
	HostKey    HostKey       `json:"host_key"`
	Group      string        `json:"group,omitempty"`
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

// DecideRegisterMachine decides a RegisterMachine against the registered
// machines (keyed by host; the command's own host may be absent). A machine
// is known under one identity only: an IP host must be written in canonical
// form, a name may not differ from a registered one in case only, and no two
// machines share an address and SSH port.
func DecideRegisterMachine(machines map[string]*Machine, c RegisterMachine) ([]Event, error) {
	if err := ValidateRegisterMachine(c); err != nil {
		return nil, err
	}
	addr, err := machineAddress(c.Host, c.Address)
	if err != nil {
		return nil, err
	}
	c.Address = addr
	if c.SSHPort == 0 {
		c.SSHPort = 22
	}
	if machines[c.Host].Active() {
		return nil, Errorf(Conflict, "machine %s is already registered", c.Host)
	}
	if other := sameMachine(machines, c); other != nil {
		if strings.EqualFold(other.Host, c.Host) {
			return nil, Errorf(Conflict, "machine %s is already registered as %s (host names do not differ in case): use that name", c.Host, other.Host)
		}
		return nil, Errorf(Conflict, "machine %s is already registered as %s (address %s, SSH port %d): one machine is registered once; use %s",
			c.Host, other.Host, c.Address, c.SSHPort, other.Host)
	}
	return []Event{MachineRegistered{Host: c.Host, Address: c.Address, SSHPort: c.SSHPort, User: c.User, Credential: c.Credential,
		Labels: c.Labels, HostKey: c.HostKey, Group: c.Group}}, nil
}

// ValidateRegisterMachine checks a RegisterMachine on its own (host, port,
// user, credential reference, labels, host key), so that a caller can refuse
// bad input before it resolves the host or connects to it. The address of a
// named host is checked by DecideRegisterMachine.
func ValidateRegisterMachine(c RegisterMachine) error {
	if err := ValidateHost(c.Host); err != nil {
		return err
	}
	if _, err := netip.ParseAddr(c.Host); err == nil {
		if _, err := machineAddress(c.Host, ""); err != nil {
			return err // an IP host is its own address: check it now
		}
	}
	if c.SSHPort != 0 {
		if err := ValidatePort(c.SSHPort); err != nil {
			return Errorf(Invalid, "ssh_port: %s", err)
		}
	}
	if err := ValidateUser(c.User); err != nil {
		return err
	}
	switch c.Credential.Kind {
	case CredentialPassword, CredentialPrivateKey:
	default:
		return Errorf(Invalid, "credential kind %q is invalid: use %q or %q", c.Credential.Kind, CredentialPassword, CredentialPrivateKey)
	}
	if c.Credential.ID == "" {
		return Errorf(Invalid, "credential id is required")
	}
	for _, l := range [...]struct{ name, value string }{{"region", c.Labels.Region}, {"zone", c.Labels.Zone}, {"rack", c.Labels.Rack}} {
		if l.value != "" && !labelRE.MatchString(l.value) {
			return Errorf(Invalid, "label %s %q is invalid: use up to 63 letters, digits, '.', '_' or '-'", l.name, l.value)
		}
	}
	if c.HostKey.Key == "" || !strings.HasPrefix(c.HostKey.Fingerprint, "SHA256:") || strings.ContainsAny(c.HostKey.Key, "\r\n") {
		return Errorf(Invalid, "the SSH host key of %s is required (one authorized_keys line with its SHA256 fingerprint)", c.Host)
	}
	return nil
}

// machineAddress checks a machine's host and address and returns the
// address in canonical form. An IP host is its own address and must be
// written canonically ("fd00::11", "198.18.0.11", not "FD00:0::11" or
// "::ffff:198.18.0.11"); a name needs the address it resolved to.
func machineAddress(host, address string) (string, error) {
	if h, err := netip.ParseAddr(host); err == nil {
		if canon := h.Unmap().String(); canon != host {
			return "", Errorf(Invalid, "host %q is not an address in canonical form: write it as %s", host, canon)
		}
		if address != "" && address != host {
			return "", Errorf(Invalid, "address %q of host %s differs from the host, which is an address", address, host)
		}
		address = host
	}
	if address == "" {
		return "", Errorf(Invalid, "the address of host %s is required: resolve the name first", host)
	}
	a, err := netip.ParseAddr(address)
	if err != nil || a.Zone() != "" {
		return "", Errorf(Invalid, "address %q of host %s is not an IP address", address, host)
	}
	a = a.Unmap()
	if reason := unusableAddress(a); reason != "" {
		return "", Errorf(Invalid, "host %s (address %s) cannot be a machine: %s", host, a, reason)
	}
	return a.String(), nil
}

// unusableAddress says why a is no machine's address, or "".
func unusableAddress(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "it is the unspecified address"
	case a.IsMulticast():
		return "it is a multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "it is the broadcast address"
	}
	return ""
}

// sameMachine returns a registered machine other than c.Host that is the
// same machine: the same name but for case, or the same address and SSH
// port. Machines are visited in host order, so the answer is deterministic.
func sameMachine(machines map[string]*Machine, c RegisterMachine) *Machine {
	hosts := make([]string, 0, len(machines))
	for h, m := range machines {
		if h != c.Host && m.Active() {
			hosts = append(hosts, h)
		}
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		m := machines[h]
		if strings.EqualFold(m.Host, c.Host) || (m.SSHPort == c.SSHPort && m.Addr() == c.Address) {
			return m
		}
	}
	return nil
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
		m = Machine{Host: e.Host, Address: e.Address, SSHPort: e.SSHPort, User: e.User, Credential: e.Credential, Labels: e.Labels,
			HostKey: e.HostKey, Group: OwnerGroup(e.Group), Status: MachineStatusRegistered, Revision: m.Revision}
	case OwnerMoved:
		m.Group = e.To
	case MachineRemoved:
		m.Status = MachineStatusRemoved
	default:
		m, _ = withPlacements(m, e)
	}
	m.Revision++
	return m
}
