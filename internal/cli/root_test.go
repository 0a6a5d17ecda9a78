package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// Every command that only groups others (cluster, machine, group member,
// …) prints its help alone and refuses a mistyped subcommand as bad usage
// (exit 2) naming the ones it has, so a script's typo never passes as
// success.
func TestCLIGroupCommandsRefuseAnUnknownSubcommand(t *testing.T) {
	var groups [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		for _, sub := range c.Commands() {
			if sub.HasSubCommands() {
				p := append(append([]string(nil), path...), sub.Name())
				groups = append(groups, p)
				walk(sub, p)
			}
		}
	}
	walk((&App{}).NewRoot(), nil)
	if len(groups) < 8 {
		t.Fatalf("found %d group commands (%v): the walk is broken", len(groups), groups)
	}
	for _, g := range groups {
		var out, errb bytes.Buffer
		a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" },
			ConfigDir: t.TempDir(), Now: time.Now}
		if code := a.Execute(context.Background(), a.NewRoot(), append(g, "frob")); code != 2 ||
			!strings.Contains(errb.String(), `has no command "frob"`) {
			t.Errorf("dmgr %s frob: exit %d, stderr %q; want 2 and the commands it has", strings.Join(g, " "), code, errb.String())
		}
		out.Reset()
		errb.Reset()
		if code := a.Execute(context.Background(), a.NewRoot(), g); code != 0 || !strings.Contains(out.String(), "Available Commands") {
			t.Errorf("dmgr %s: exit %d, want its help", strings.Join(g, " "), code)
		}
	}
}
