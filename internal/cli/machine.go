package cli

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

// machineDoc is a machine as the API answers it.
type machineDoc struct {
	Host       string `json:"host"`
	Address    string `json:"address,omitempty"`
	SSHPort    int    `json:"ssh_port"`
	User       string `json:"user"`
	Credential struct {
		ID   string `json:"id"`
		Kind string `json:"kind"`
	} `json:"credential"`
	Labels  map[string]string `json:"labels,omitempty"`
	HostKey struct {
		Key         string `json:"key"`
		Fingerprint string `json:"fingerprint"`
	} `json:"host_key"`
	Status   string `json:"status"`
	Group    string `json:"group"`
	Revision uint64 `json:"revision"`
}

// machineLabels are the labels a machine may carry.
var machineLabels = []string{"region", "zone", "rack"}

func (a *App) addMachineCommands(root *cobra.Command) {
	cmd := &cobra.Command{Use: "machine", Short: "Register the machines clusters are deployed to, list and remove them"}
	cmd.AddCommand(a.machineAddCommand(), a.machineListCommand(), a.machineShowCommand(), a.machineRemoveCommand())
	root.AddCommand(cmd)
}

func (a *App) machineAddCommand() *cobra.Command {
	var (
		user, keyFile, hostKey, group string
		port                          int
		labels                        []string
		passwordStdin, passStdin      bool
	)
	cmd := &cobra.Command{
		Use:   "add HOST --user USER (-i KEYFILE | --password-stdin)",
		Short: "Register a machine: its SSH login (stored encrypted) and its pinned host key",
		Long: `Register a machine that clusters may be deployed to. dmgr logs in as USER
with the private key of -i (an encrypted key's passphrase is asked, or read
with --passphrase-stdin) or the password read from stdin (--password-stdin);
the credential is stored encrypted and never shown again. USER must be root
or have sudo. Unless --host-key gives the machine's SSH host key, dmgr reads
the key the machine offers now and pins it (trust on first use): the command
prints its fingerprint, compare it with the machine's
(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub).`,
		Example: "  dmgr machine add 10.0.0.1 --user root -i ~/.ssh/id_ed25519 --label zone=z1\n  echo \"$PW\" | dmgr machine add 10.0.0.2 --user tidb --password-stdin",
		Args:    args(1, 1, "HOST"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if user == "" {
				return usageError("machine add %s: name the SSH user with --user", args[0])
			}
			if (keyFile == "") == !passwordStdin {
				return usageError("machine add %s: give exactly one of -i KEYFILE and --password-stdin", args[0])
			}
			lbl, err := parseLabels(labels)
			if err != nil {
				return err
			}
			for k := range lbl {
				if !contains(machineLabels, k) {
					return usageError("--label %s: a machine's labels are region, zone and rack", k)
				}
			}
			body := map[string]any{"host": args[0], "user": user}
			if port != 0 {
				body["ssh_port"] = port
			}
			if len(lbl) > 0 {
				body["labels"] = lbl
			}
			if group != "" {
				body["group"] = group
			}
			if hostKey != "" {
				body["host_key"] = hostKey
			}
			if passwordStdin {
				pw, err := a.readSecret(ctx, "", true, "")
				if err != nil {
					return err
				}
				body["password"] = pw
			} else {
				key, pass, err := a.readPrivateKey(ctx, keyFile, passStdin)
				if err != nil {
					return err
				}
				body["private_key"] = key
				if pass != "" {
					body["private_key_passphrase"] = pass
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			var acc Accepted
			if _, err := c.Do(ctx, Request{Method: http.MethodPost, Path: "/api/v1/machines", Body: body, Idempotent: true}, &acc); err != nil {
				return fmt.Errorf("machine add %s: %w", args[0], err)
			}
			var m machineDoc
			raw, err := getDoc(ctx, c, Request{Method: http.MethodGet, Path: pathf("/api/v1/machines/%s", args[0]), Header: minSeq(acc.CommitSeq)}, &m)
			if err != nil {
				return fmt.Errorf("machine %s was registered, but reading it back failed: %w", args[0], err)
			}
			return a.print(raw, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Registered machine %s (%s, group %s). Pinned host key %s\n  %s\nCompare it with the machine's: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub\n",
					m.Host, sshTarget(m), firstNonEmpty(m.Group, "default"), m.HostKey.Fingerprint, m.HostKey.Key)
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&user, "user", "u", "", "the SSH user dmgr logs in as (root, or a user with sudo)")
	f.StringVarP(&keyFile, "identity-file", "i", "", "the SSH private key file (PEM: OpenSSH, PKCS#1, PKCS#8 or SEC 1)")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the SSH password from stdin (its first line)")
	f.BoolVar(&passStdin, "passphrase-stdin", false, "read the private key's passphrase from stdin")
	f.IntVarP(&port, "port", "p", 0, "the SSH port (default 22)")
	f.StringArrayVar(&labels, "label", nil, "a label, region=, zone= or rack=; repeat for more")
	f.StringVar(&group, "group", "", "the group that owns the machine (default: default)")
	f.StringVar(&hostKey, "host-key", "", `pin this SSH host key (an authorized_keys line, "ssh-ed25519 AAAA…") instead of the one the machine offers now`)
	return cmd
}

func sshTarget(m machineDoc) string {
	port := m.SSHPort
	if port == 0 {
		port = 22
	}
	addr := firstNonEmpty(m.Address, m.Host)
	return m.User + "@" + addr + ":" + strconv.Itoa(port)
}

func (a *App) machineListCommand() *cobra.Command {
	var label string
	cmd := a.listCommand(listSpec{path: "/api/v1/machines", noun: "machines", short: "List the machines you may see, by host",
		example: "  dmgr machine list --label zone=z1\n  dmgr machine list --all -o json"},
		func() (url.Values, error) { return queryOf("label", label), nil }, writeMachines)
	cmd.Flags().StringVar(&label, "label", "", "only machines with this label (zone=z1)")
	return cmd
}

var writeMachines = itemsTable([]string{"Host", "Address", "SSH", "Login", "Labels", "Group", "Host key"}, func(m machineDoc) []string {
	return []string{m.Host, firstNonEmpty(m.Address, m.Host), sshTarget(m), m.Credential.Kind, labelsText(m.Labels), m.Group, m.HostKey.Fingerprint}
})

func (a *App) machineShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "show HOST",
		Short:             "Show a machine, with the fingerprint of its pinned host key",
		Args:              args(1, 1, "HOST"),
		ValidArgsFunction: a.completeHosts,
		RunE: func(cmd *cobra.Command, args []string) error {
			var m machineDoc
			raw, err := a.read(cmd.Context(), Request{Method: http.MethodGet, Path: pathf("/api/v1/machines/%s", args[0])}, &m)
			if err != nil {
				return err
			}
			return a.print(raw, func(w io.Writer) error {
				return KeyValues(w,
					[2]string{"Host", m.Host},
					[2]string{"Address", firstNonEmpty(m.Address, m.Host)},
					[2]string{"SSH", sshTarget(m)},
					[2]string{"Login", m.Credential.Kind + " (" + m.Credential.ID + ", stored encrypted)"},
					[2]string{"Labels", orDash(labelsText(m.Labels))},
					[2]string{"Group", m.Group},
					[2]string{"Status", m.Status},
					[2]string{"Host key", m.HostKey.Fingerprint},
					[2]string{"Host key line", m.HostKey.Key},
				)
			})
		},
	}
}

func (a *App) machineRemoveCommand() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:               "rm HOST",
		Aliases:           []string{"remove"},
		Short:             "Remove a machine that no cluster uses (its credential is deleted)",
		Args:              args(1, 1, "HOST"),
		ValidArgsFunction: a.completeHosts,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if err := a.confirm(yes, "Remove machine "+args[0]+" and delete its credential?"); err != nil {
				return err
			}
			var acc Accepted
			if _, err := c.Do(cmd.Context(), Request{Method: http.MethodDelete, Path: pathf("/api/v1/machines/%s", args[0]), Idempotent: true}, &acc); err != nil {
				return fmt.Errorf("machine rm %s: %w", args[0], err)
			}
			return a.print(acc, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Removed machine %s\n", args[0])
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask")
	return cmd
}
