package busauth

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// NkeyUsers is users as the embedded NATS server takes them
// (server.Options.Nkeys). A server with these and no NoAuthUser refuses
// every connection without one of the users' keys.
func NkeyUsers(users []User) []*server.NkeyUser {
	out := make([]*server.NkeyUser, 0, len(users))
	for _, u := range users {
		p := u.Permissions()
		out = append(out, &server.NkeyUser{
			Nkey: u.PublicKey,
			Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: p.Publish.Allow, Deny: p.Publish.Deny},
				Subscribe: &server.SubjectPermission{Allow: p.Subscribe.Allow, Deny: p.Subscribe.Deny},
			},
		})
	}
	return out
}

// ConfigFileName is the file `dmgr bus init` writes the authorization
// block to.
const ConfigFileName = "nats-auth.conf"

// RenderConfig is users as an `authorization { users = [...] }` block of a
// nats-server configuration file, to be included by the server's own
// configuration (`include nats-auth.conf`). It holds public keys only.
func RenderConfig(users []User) string {
	var b strings.Builder
	b.WriteString("# dmgr's NATS users, one nkey per role (written by `dmgr bus init`).\n")
	b.WriteString("# Public keys only: the seeds stay with the processes of each role.\n")
	b.WriteString("# Include this file from the nats-server configuration, at the top level:\n")
	b.WriteString("#   include ./" + ConfigFileName + "\n")
	b.WriteString("# and never set no_auth_user: dmgr refuses a bus that takes anonymous connections.\n")
	b.WriteString("authorization {\n  users = [\n")
	for _, u := range users {
		p := u.Permissions()
		fmt.Fprintf(&b, "    # %s\n", u.Identity)
		fmt.Fprintf(&b, "    {\n      nkey: %s\n      permissions: {\n", strconv.Quote(u.PublicKey))
		writeSubjects(&b, "publish", p.Publish)
		writeSubjects(&b, "subscribe", p.Subscribe)
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func writeSubjects(b *strings.Builder, name string, s Subjects) {
	fmt.Fprintf(b, "        %s: {\n", name)
	list := func(key string, subjects []string) {
		if len(subjects) == 0 {
			return
		}
		fmt.Fprintf(b, "          %s: [\n", key)
		for _, s := range subjects {
			// Quoted, so that the configuration parser takes "$JS.API…"
			// literally rather than as a variable.
			fmt.Fprintf(b, "            %s\n", strconv.Quote(s))
		}
		b.WriteString("          ]\n")
	}
	list("allow", s.Allow)
	list("deny", s.Deny)
	b.WriteString("        }\n")
}

// WriteConfig writes RenderConfig(users) to path (mode 0644: it holds no
// secret, and nats-server may run as another user).
func WriteConfig(path string, users []User) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".nats-auth-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(RenderConfig(users))
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
