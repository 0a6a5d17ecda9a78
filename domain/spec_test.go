package domain

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// The shared harness of the decider specifications: given recorded events,
// when a command is decided, then events or an error.

// recorded is one event of the history, as the event store keeps it: the
// aggregate it belongs to and the event itself.
type recorded struct {
	aggregate string
	id        string
	event     Event
}

// given folds a history into a World, as the service does before deciding.
func given(history ...recorded) *World {
	w := NewWorld()
	for _, r := range history {
		w.Apply(r.aggregate, r.id, r.event)
	}
	return w
}

// history concatenates histories, so that tables can combine fixtures.
func history(parts ...[]recorded) []recorded {
	var out []recorded
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// onMachine, onPackage and onCluster record events of one aggregate.
func onMachine(host string, evs ...Event) []recorded { return onAggregate(AggregateMachine, host, evs) }
func onPackage(id string, evs ...Event) []recorded   { return onAggregate(AggregatePackage, id, evs) }
func onCluster(name string, evs ...Event) []recorded { return onAggregate(AggregateCluster, name, evs) }

func onAggregate(typ, id string, evs []Event) []recorded {
	out := make([]recorded, 0, len(evs))
	for _, e := range evs {
		out = append(out, recorded{typ, id, e})
	}
	return out
}

// machineRegistered is the event of a machine registered with a password.
func machineRegistered(host string) MachineRegistered {
	return MachineRegistered{Host: host, SSHPort: 22, User: "tidb", Credential: CredentialRef{ID: "cred-" + host, Kind: CredentialPassword},
		HostKey: testHostKey}
}

// testHostKey is a pinned host key for machines of the tests.
var testHostKey = HostKey{Key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKdGq0dmgrTestHostKeyOnlyForUnitTests0000",
	Fingerprint: "SHA256:dmgrTestFingerprintOnlyForUnitTests000000000"}

// registered records the registration of each host.
func registered(hosts ...string) []recorded {
	var out []recorded
	for _, h := range hosts {
		out = append(out, onMachine(h, machineRegistered(h))...)
	}
	return out
}

// dmUploaded is the event of the offline DM package of a version.
func dmUploaded(version, arch string) PackageUploaded {
	return PackageUploaded{ID: PackageID(DMPackageName, version, "linux", arch), Name: DMPackageName, Version: version,
		OS: "linux", Arch: arch, SHA256: strings.Repeat("ab", 32), Size: 123456789,
		Object: "packages/dm-" + version + "-linux-" + arch + ".tar.gz", Components: []string{"dm-master", "dm-worker"},
		Files: dmPackageFiles()}
}

// dmPackageFiles is the manifest of a complete DM package.
func dmPackageFiles() []PackageFile {
	var out []PackageFile
	for i, p := range []string{"bin/alertmanager", "bin/dm-master", "bin/dm-worker", "bin/prometheus",
		"conf/alertmanager.yml", "conf/dm_worker.rules.yml", "grafana.tar.gz"} {
		out = append(out, PackageFile{Path: p, Size: int64(1000 + i), Mode: 0o755, SHA256: strings.Repeat(fmt.Sprintf("%02x", i), 32)})
	}
	return out
}

// uploaded records the upload of the DM package of a version for linux/arch.
func uploaded(version, arch string) []recorded {
	p := dmUploaded(version, arch)
	return onPackage(p.ID, p)
}

// specLines joins lines into a text ending in a newline; line n of the text
// is ls[n-1], so that tables can name lines.
func specLines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

// withLine returns text with its line n (1-based) replaced by l.
func withLine(t *testing.T, text string, n int, l string) string {
	t.Helper()
	ls := strings.Split(text, "\n")
	if n < 1 || n > len(ls) {
		t.Fatalf("withLine: the text has no line %d", n)
	}
	ls[n-1] = l
	return strings.Join(ls, "\n")
}

// then checks a decision: the events want, or, when code is not empty, an
// *Error with that code whose message contains every one of msgs.
type then struct {
	events []Event
	code   string
	msgs   []string
}

func thenEvents(evs ...Event) then               { return then{events: evs} }
func thenError(code string, msgs ...string) then { return then{code: code, msgs: msgs} }

func (want then) check(t *testing.T, got []Event, err error) {
	t.Helper()
	if want.code == "" {
		if err != nil {
			t.Fatalf("refused with %s error %q, want events %s", ErrorCode(err), err, describeEvents(want.events))
		}
		if !reflect.DeepEqual(got, want.events) {
			t.Fatalf("events =\n  %s\nwant\n  %s", describeEvents(got), describeEvents(want.events))
		}
		return
	}
	if err == nil {
		t.Fatalf("accepted with events %s, want a %s error containing %q", describeEvents(got), want.code, want.msgs)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %q (%T) is not a *domain.Error", err, err)
	}
	if got != nil {
		t.Errorf("refused but also returned events %s", describeEvents(got))
	}
	if e.Code != want.code {
		t.Errorf("error code = %q, want %q (message %q)", e.Code, want.code, e.Message)
	}
	for _, m := range want.msgs {
		if !strings.Contains(e.Message, m) {
			t.Errorf("error message %q does not contain %q", e.Message, m)
		}
	}
}

func describeEvents(evs []Event) string {
	if len(evs) == 0 {
		return "(none)"
	}
	parts := make([]string, len(evs))
	for i, e := range evs {
		parts[i] = fmt.Sprintf("%T%+v", e, e)
	}
	return strings.Join(parts, "\n  ")
}
