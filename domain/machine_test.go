package domain

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// machineState folds the history of one machine into the machines the
// service passes the decider (none when it has no history).
func machineState(evs []Event) map[string]*Machine {
	machines := map[string]*Machine{}
	var m Machine
	for _, e := range evs {
		m = EvolveMachine(m, e)
		machines[m.Host] = &m
	}
	return machines
}

// machinesOf folds several machines' histories.
func machinesOf(evs ...Event) map[string]*Machine {
	w := NewWorld()
	for _, e := range evs {
		switch e := e.(type) {
		case MachineRegistered:
			w.Apply(AggregateMachine, e.Host, e)
		case MachineRemoved:
			w.Apply(AggregateMachine, e.Host, e)
		}
	}
	return w.Machines
}

func TestDecideRegisterMachine(t *testing.T) {
	const host = "198.18.0.11"
	pw := CredentialRef{ID: "cred-1", Kind: CredentialPassword}
	cmd := func(edit func(*RegisterMachine)) RegisterMachine {
		c := RegisterMachine{Host: host, User: "tidb", Credential: pw, HostKey: testHostKey}
		if edit != nil {
			edit(&c)
		}
		return c
	}
	tests := []struct {
		name  string
		given []Event
		when  RegisterMachine
		then  then
	}{
		{"ssh_port defaults to 22", nil, cmd(nil),
			thenEvents(MachineRegistered{Host: host, Address: host, SSHPort: 22, User: "tidb", Credential: pw, HostKey: testHostKey})},
		{"a private key, a port and labels", nil,
			cmd(func(c *RegisterMachine) {
				c.Host, c.Address, c.SSHPort, c.User = "dm-1.example.com", "198.18.7.1", 2222, "dm_admin"
				c.Credential = CredentialRef{ID: "key-7", Kind: CredentialPrivateKey}
				c.Labels = Labels{Region: "eu-west", Zone: "eu-west-1a", Rack: "r12"}
			}),
			thenEvents(MachineRegistered{Host: "dm-1.example.com", Address: "198.18.7.1", SSHPort: 2222, User: "dm_admin",
				Credential: CredentialRef{ID: "key-7", Kind: CredentialPrivateKey},
				Labels:     Labels{Region: "eu-west", Zone: "eu-west-1a", Rack: "r12"}, HostKey: testHostKey})},
		{"an IPv6 host", nil, cmd(func(c *RegisterMachine) { c.Host = "fd00::11" }),
			thenEvents(MachineRegistered{Host: "fd00::11", Address: "fd00::11", SSHPort: 22, User: "tidb", Credential: pw, HostKey: testHostKey})},

		{"host with a space", nil, cmd(func(c *RegisterMachine) { c.Host = "198.18.0.11 x" }),
			thenError(Invalid, `host "198.18.0.11 x" is invalid`)},
		{"host with a shell metacharacter", nil, cmd(func(c *RegisterMachine) { c.Host = "h1;reboot" }),
			thenError(Invalid, `host "h1;reboot" is invalid`)},
		{"empty host", nil, cmd(func(c *RegisterMachine) { c.Host = "" }),
			thenError(Invalid, "host is empty")},
		{"mistyped address", nil, cmd(func(c *RegisterMachine) { c.Host = "198.18.0.256" }),
			thenError(Invalid, `host "198.18.0.256" is invalid`)},
		{"ssh_port out of range", nil, cmd(func(c *RegisterMachine) { c.SSHPort = 65536 }),
			thenError(Invalid, "ssh_port: port 65536 is out of range: use 1-65535")},
		{"negative ssh_port", nil, cmd(func(c *RegisterMachine) { c.SSHPort = -22 }),
			thenError(Invalid, "ssh_port: port -22 is out of range")},
		{"upper-case user", nil, cmd(func(c *RegisterMachine) { c.User = "Root" }),
			thenError(Invalid, `user "Root" is invalid`)},
		{"empty user", nil, cmd(func(c *RegisterMachine) { c.User = "" }),
			thenError(Invalid, `user "" is invalid`)},
		{"user with a shell metacharacter", nil, cmd(func(c *RegisterMachine) { c.User = "tidb$(id)" }),
			thenError(Invalid, `user "tidb$(id)" is invalid`)},
		{"unknown credential kind", nil, cmd(func(c *RegisterMachine) { c.Credential.Kind = "token" }),
			thenError(Invalid, `credential kind "token" is invalid`, `"password"`, `"private_key"`)},
		{"no credential kind", nil, cmd(func(c *RegisterMachine) { c.Credential.Kind = "" }),
			thenError(Invalid, `credential kind "" is invalid`)},
		{"no credential id", nil, cmd(func(c *RegisterMachine) { c.Credential.ID = "" }),
			thenError(Invalid, "credential id is required")},
		{"no host key", nil, cmd(func(c *RegisterMachine) { c.HostKey = HostKey{} }),
			thenError(Invalid, "SSH host key of 198.18.0.11 is required")},
		{"host key without a fingerprint", nil, cmd(func(c *RegisterMachine) { c.HostKey.Fingerprint = "" }),
			thenError(Invalid, "SSH host key of 198.18.0.11 is required")},
		{"host key of two lines", nil, cmd(func(c *RegisterMachine) { c.HostKey.Key += "\nssh-rsa AAAA" }),
			thenError(Invalid, "SSH host key of 198.18.0.11 is required")},
		{"label with a space", nil, cmd(func(c *RegisterMachine) { c.Labels.Zone = "zone a" }),
			thenError(Invalid, `label zone "zone a" is invalid`)},
		{"label starting with '-'", nil, cmd(func(c *RegisterMachine) { c.Labels.Region = "-eu" }),
			thenError(Invalid, `label region "-eu" is invalid`)},
		{"label too long", nil, cmd(func(c *RegisterMachine) { c.Labels.Rack = strings.Repeat("r", 64) }),
			thenError(Invalid, "label rack", "up to 63")},

		{"already registered", []Event{machineRegistered(host)}, cmd(nil),
			thenError(Conflict, "machine 198.18.0.11 is already registered")},
		{"already registered, with other settings", []Event{machineRegistered(host)},
			cmd(func(c *RegisterMachine) { c.SSHPort, c.User = 2222, "admin" }),
			thenError(Conflict, "machine 198.18.0.11 is already registered")},
		{"invalid input is reported before the conflict", []Event{machineRegistered(host)},
			cmd(func(c *RegisterMachine) { c.User = "Root" }),
			thenError(Invalid, `user "Root" is invalid`)},
		{"registered again after removal", []Event{machineRegistered(host), MachineRemoved{Host: host}},
			cmd(func(c *RegisterMachine) { c.User = "admin" }),
			thenEvents(MachineRegistered{Host: host, Address: host, SSHPort: 22, User: "admin", Credential: pw, HostKey: testHostKey})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecideRegisterMachine(machineState(tt.given), tt.when)
			tt.then.check(t, got, err)
		})
	}
}

// TestMachineRegisteredCarriesNoSecret: the event names the credential by id
// and kind; the secret itself never enters the event store.
func TestMachineRegisteredCarriesNoSecret(t *testing.T) {
	evs, err := DecideRegisterMachine(nil, RegisterMachine{Host: "198.18.0.11", User: "tidb",
		Credential: CredentialRef{ID: "cred-1", Kind: CredentialPrivateKey}, HostKey: testHostKey})
	if err != nil || len(evs) != 1 {
		t.Fatalf("DecideRegisterMachine = %v, %v; want one event", evs, err)
	}
	b, err := json.Marshal(evs[0])
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if got, want := sortedKeys(doc), []string{"address", "credential", "host", "host_key", "labels", "ssh_port", "user"}; !slices.Equal(got, want) {
		t.Errorf("MachineRegistered has keys %v, want %v", got, want)
	}
	var cred map[string]any
	if err := json.Unmarshal(doc["credential"], &cred); err != nil {
		t.Fatal(err)
	}
	if want := map[string]any{"id": "cred-1", "kind": "private_key"}; !reflect.DeepEqual(cred, want) {
		t.Errorf("credential = %v, want only %v", cred, want)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestDecideRemoveMachine(t *testing.T) {
	const host = "198.18.0.11"
	prodA := deployedCluster(t, "prod-a", prodATopology)
	prodB := deployedCluster(t, "prod-b", prodBTopology)
	onlyOn12 := deployedCluster(t, "edge", specLines(
		"master_servers:",
		"  - host: 198.18.0.12",
		"    port: 9261",
		"    peer_port: 9291",
		"    deploy_dir: /edge/master",
	))
	tests := []struct {
		name  string
		given []recorded
		when  RemoveMachine
		then  then
	}{
		{"never registered", nil, RemoveMachine{Host: host},
			thenError(NotFound, "machine 198.18.0.11 is not registered")},
		{"another machine is registered", registered("198.18.0.12"), RemoveMachine{Host: host},
			thenError(NotFound, "machine 198.18.0.11 is not registered")},
		{"unused", registered(host), RemoveMachine{Host: host},
			thenEvents(MachineRemoved{Host: host})},
		{"used by a cluster", history(registered(prodHosts...), prodA), RemoveMachine{Host: host},
			thenError(Conflict, "machine 198.18.0.11 is used by cluster prod-a", "scale the instances in or destroy the cluster first")},
		{"used by two clusters", history(registered(prodHosts...), prodB, prodA), RemoveMachine{Host: host},
			thenError(Conflict, "machine 198.18.0.11 is used by cluster prod-a, prod-b")},
		{"clusters on other machines only", history(registered(prodHosts...), onlyOn12), RemoveMachine{Host: host},
			thenEvents(MachineRemoved{Host: host})},
		{"already removed", history(registered(host), onMachine(host, MachineRemoved{Host: host})), RemoveMachine{Host: host},
			thenError(NotFound, "machine 198.18.0.11 is not registered")},
		{"registered again after removal", history(registered(host), onMachine(host, MachineRemoved{Host: host}), registered(host)),
			RemoveMachine{Host: host}, thenEvents(MachineRemoved{Host: host})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecideRemoveMachine(given(tt.given...), tt.when)
			tt.then.check(t, got, err)
		})
	}
}

func TestEvolveMachine(t *testing.T) {
	const host = "198.18.0.11"
	first := MachineRegistered{Host: host, SSHPort: 2222, User: "tidb", Credential: CredentialRef{ID: "c1", Kind: CredentialPassword},
		Labels: Labels{Region: "eu", Zone: "eu-1", Rack: "r1"}}
	again := MachineRegistered{Host: host, SSHPort: 22, User: "admin", Credential: CredentialRef{ID: "c2", Kind: CredentialPrivateKey}}
	tests := []struct {
		name   string
		events []Event
		want   Machine
	}{
		{"registered", []Event{first},
			Machine{Host: host, SSHPort: 2222, User: "tidb", Credential: first.Credential, Labels: first.Labels,
				Group: DefaultGroup, Status: MachineStatusRegistered, Revision: 1}},
		{"removed keeps what was known", []Event{first, MachineRemoved{Host: host}},
			Machine{Host: host, SSHPort: 2222, User: "tidb", Credential: first.Credential, Labels: first.Labels,
				Group: DefaultGroup, Status: MachineStatusRemoved, Revision: 2}},
		{"registered again replaces the settings and keeps counting", []Event{first, MachineRemoved{Host: host}, again},
			Machine{Host: host, SSHPort: 22, User: "admin", Credential: again.Credential,
				Group: DefaultGroup, Status: MachineStatusRegistered, Revision: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Machine
			for _, e := range tt.events {
				m = EvolveMachine(m, e)
			}
			if !reflect.DeepEqual(m, tt.want) {
				t.Errorf("state =\n  %+v\nwant\n  %+v", m, tt.want)
			}
			if again := machineState(tt.events)[host]; !reflect.DeepEqual(*again, m) {
				t.Errorf("folding the same events again gave\n  %+v\nthe first fold gave\n  %+v", *again, m)
			}
			if got, want := m.Active(), m.Status == MachineStatusRegistered; got != want {
				t.Errorf("Active() = %v with status %q", got, m.Status)
			}
		})
	}
	var none *Machine
	if none.Active() {
		t.Error("a nil machine is active")
	}
}

// TestDecideRegisterMachineKeepsOneIdentityPerMachine: a machine is
// registered once, whatever address spelling or name it is given.
func TestDecideRegisterMachineKeepsOneIdentityPerMachine(t *testing.T) {
	pw := CredentialRef{ID: "cred-1", Kind: CredentialPassword}
	reg := func(host, addr string, port int) MachineRegistered {
		return MachineRegistered{Host: host, Address: addr, SSHPort: port, User: "tidb", Credential: pw, HostKey: testHostKey}
	}
	cmd := func(host, addr string, port int) RegisterMachine {
		return RegisterMachine{Host: host, Address: addr, SSHPort: port, User: "tidb", Credential: pw, HostKey: testHostKey}
	}
	tests := []struct {
		name  string
		given map[string]*Machine
		when  RegisterMachine
		then  then
	}{
		{"a name for an address already registered", machinesOf(reg("198.18.0.11", "198.18.0.11", 22)),
			cmd("dm-1.example.com", "198.18.0.11", 22),
			thenError(Conflict, "machine dm-1.example.com is already registered as 198.18.0.11", "address 198.18.0.11, SSH port 22")},
		{"an address already registered under a name", machinesOf(reg("dm-1.example.com", "198.18.0.11", 22)),
			cmd("198.18.0.11", "", 22),
			thenError(Conflict, "already registered as dm-1.example.com")},
		{"two names of one address", machinesOf(reg("dm-1.example.com", "198.18.0.11", 22)),
			cmd("dm-1.other.example", "198.18.0.11", 22),
			thenError(Conflict, "already registered as dm-1.example.com")},
		{"an IPv6 address registered under a name", machinesOf(reg("dm-6.example.com", "fd00::11", 22)),
			cmd("fd00::11", "", 22), thenError(Conflict, "already registered as dm-6.example.com")},
		{"a name that differs in case only", machinesOf(reg("dm-1.example.com", "198.18.0.11", 22)),
			cmd("DM-1.example.com", "198.18.0.11", 2222),
			thenError(Conflict, "already registered as dm-1.example.com", "case")},
		{"an address registered before addresses were recorded", machinesOf(reg("198.18.0.11", "", 22)),
			cmd("dm-1.example.com", "198.18.0.11", 22), thenError(Conflict, "already registered as 198.18.0.11")},
		{"the same address on another SSH port", machinesOf(reg("198.18.0.11", "198.18.0.11", 22)),
			cmd("dm-1.example.com", "198.18.0.11", 2222),
			thenEvents(reg("dm-1.example.com", "198.18.0.11", 2222))},
		{"the address of a removed machine", machinesOf(reg("198.18.0.11", "198.18.0.11", 22), MachineRemoved{Host: "198.18.0.11"}),
			cmd("dm-1.example.com", "198.18.0.11", 22), thenEvents(reg("dm-1.example.com", "198.18.0.11", 22))},
		{"a mapped IPv4 address as the resolved address", nil, cmd("dm-1.example.com", "::ffff:198.18.0.11", 22),
			thenEvents(reg("dm-1.example.com", "198.18.0.11", 22))},

		{"an IPv6 host not in canonical form", nil, cmd("FD00:0::11", "", 22),
			thenError(Invalid, `host "FD00:0::11" is not an address in canonical form: write it as fd00::11`)},
		{"an IPv4-mapped IPv6 host", nil, cmd("::ffff:198.18.0.11", "", 22),
			thenError(Invalid, "write it as 198.18.0.11")},
		{"a name without its address", nil, cmd("dm-1.example.com", "", 22),
			thenError(Invalid, "the address of host dm-1.example.com is required")},
		{"an address that is no IP", nil, cmd("dm-1.example.com", "dm-2.example.com", 22),
			thenError(Invalid, `address "dm-2.example.com" of host dm-1.example.com is not an IP address`)},
		{"an IP host with another address", nil, cmd("198.18.0.11", "198.18.0.12", 22),
			thenError(Invalid, "differs from the host")},
		{"the unspecified address", nil, cmd("0.0.0.0", "", 22), thenError(Invalid, "unspecified address")},
		{"a name resolving to the unspecified IPv6 address", nil, cmd("zero.example.com", "::", 22),
			thenError(Invalid, "host zero.example.com (address ::) cannot be a machine: it is the unspecified address")},
		{"a multicast address", nil, cmd("224.0.0.1", "", 22), thenError(Invalid, "multicast")},
		{"the broadcast address", nil, cmd("255.255.255.255", "", 22), thenError(Invalid, "broadcast")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecideRegisterMachine(tt.given, tt.when)
			tt.then.check(t, got, err)
		})
	}
}

func TestMachineAddrOfOlderEvents(t *testing.T) {
	for _, tt := range []struct{ host, address, want string }{
		{"198.18.0.11", "", "198.18.0.11"}, {"dm-1.example.com", "", ""}, {"dm-1.example.com", "198.18.0.11", "198.18.0.11"},
		{"fd00::11", "", "fd00::11"},
	} {
		m := EvolveMachine(Machine{}, MachineRegistered{Host: tt.host, Address: tt.address})
		if got := m.Addr(); got != tt.want {
			t.Errorf("Machine{Host: %q, Address: %q}.Addr() = %q, want %q", tt.host, tt.address, got, tt.want)
		}
	}
}
