package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
)

func (a *App) clusterImportCommand() *cobra.Command {
	var (
		f          changeFlags
		name       string
		group      string
		keyFile    string
		passStdin  bool
		labels     []string
		serviceMgr string
		maxMetaLen int64 = 1 << 20
	)
	cmd := &cobra.Command{
		Use:   "import TIUP_CLUSTER_DIR",
		Short: "Take over a cluster that tiup dm deployed, from its directory in ~/.tiup/storage/dm/clusters",
		Long: `Take over a DM cluster deployed by tiup dm: the command reads the cluster's
directory as tiup keeps it (~/.tiup/storage/dm/clusters/NAME): meta.yaml
(user, version, topology) and ssh/id_rsa, the key tiup logs in with. The
server registers the hosts with that key, checks the instances, and from
then on manages the cluster. The name is the directory's unless --name
gives another. An encrypted key's passphrase is asked on the terminal
(or read from stdin with --passphrase-stdin). The plan shows the instances,
the hosts (registered as machines by the import, or already), and the
checks it runs: they only read the hosts; nothing is stopped, started or
written. The package of the cluster's version must be uploaded.`,
		Example: "  dmgr cluster import ~/.tiup/storage/dm/clusters/prod-a\n  dmgr cluster import ./prod-a --name prod-a-dmgr --group payments",
		Args:    args(1, 1, "TIUP_CLUSTER_DIR"),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveFilterDirs
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := filepath.Clean(args[0])
			if name == "" {
				abs, err := filepath.Abs(dir)
				if err != nil {
					return usageError("import %s: %v", dir, err)
				}
				name = filepath.Base(abs)
			}
			meta, err := readSmallFile(filepath.Join(dir, "meta.yaml"), maxMetaLen)
			if err != nil {
				return usageError("import %s: %v (is it a tiup dm cluster directory?)", dir, err)
			}
			if keyFile == "" {
				keyFile = filepath.Join(dir, "ssh", "id_rsa")
			}
			key, pass, err := a.readPrivateKey(cmd.Context(), keyFile, passStdin)
			if err != nil {
				return err
			}
			lbl, err := parseLabels(labels)
			if err != nil {
				return err
			}
			if serviceMgr != "" && serviceMgr != "systemd" && serviceMgr != "none" {
				return usageError("--service-manager %q: systemd or none", serviceMgr)
			}
			body := map[string]any{"name": name, "meta": meta, "ssh_key": key}
			if len(lbl) > 0 {
				body["labels"] = lbl
			}
			if serviceMgr != "" {
				body["service_manager"] = serviceMgr
			}
			if pass != "" {
				body["ssh_key_passphrase"] = pass
			}
			if group != "" {
				body["group"] = group
			}
			return a.runChange(cmd.Context(), change{What: "import of " + name, Method: http.MethodPost,
				Path: "/api/v1/clusters/import", Body: body, Yes: f.yes, DryRun: f.dryRun, ErrorPrefix: filepath.Join(dir, "meta.yaml"),
				Show: func(w io.Writer, raw json.RawMessage) error { return showImportPlan(w, raw, name) }})
		},
	}
	addChangeFlags(cmd, &f)
	cmd.Flags().StringVar(&name, "name", "", "the cluster's name in dmgr (default: the directory's name)")
	cmd.Flags().StringVar(&group, "group", "", "the group that owns the cluster and its machines (default: default)")
	cmd.Flags().StringVarP(&keyFile, "identity-file", "i", "", "the SSH private key (default: TIUP_CLUSTER_DIR/ssh/id_rsa)")
	cmd.Flags().BoolVar(&passStdin, "passphrase-stdin", false, "read the key's passphrase from stdin")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "a label of the cluster, key=value (env=prod); repeat for more")
	cmd.Flags().StringVar(&serviceMgr, "service-manager", "", "how the instances run: systemd (tiup's units) or none (run scripts with pid files); default: read from the hosts")
	return cmd
}

// showImportPlan prints an import's plan: the cluster as tiup shows a
// deploy, the machines, and the checks.
func showImportPlan(w io.Writer, raw json.RawMessage, name string) error {
	var p struct {
		Plan struct {
			Cluster  *clusterDoc `json:"cluster"`
			Machines []struct {
				Host        string `json:"host"`
				Address     string `json:"address"`
				SSHPort     int    `json:"ssh_port"`
				User        string `json:"user"`
				Registered  bool   `json:"registered"`
				Fingerprint string `json:"host_key_fingerprint"`
			} `json:"machines"`
			Steps   []PlanStep `json:"steps"`
			Ignored []string   `json:"ignored"`
		} `json:"plan"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return fmt.Errorf("the plan is not what this dmgr expects (%w); is the server the same version?", err)
	}
	cl := p.Plan.Cluster
	if cl == nil {
		cl = &clusterDoc{Name: name}
	}
	if err := KeyValues(w, [2]string{"Cluster type", "dm"}, [2]string{"Cluster name", name}, [2]string{"Cluster version", cl.Version},
		[2]string{"Deploy user", cl.Global.User}); err != nil {
		return err
	}
	if err := instancesTable(cl.Instances, cl.Global.OS, cl.Global.Arch).Write(w); err != nil {
		return err
	}
	fmt.Fprintln(w)
	t := NewTable("Machine", "SSH", "Host key", "Registered")
	for _, m := range p.Plan.Machines {
		reg := "by this import"
		if m.Registered {
			reg = "already"
		}
		t.Row(m.Host, sshTarget(machineDoc{Host: m.Host, Address: m.Address, SSHPort: m.SSHPort, User: m.User}), orDash(m.Fingerprint), reg)
	}
	if err := t.Write(w); err != nil {
		return err
	}
	if len(p.Plan.Ignored) > 0 {
		fmt.Fprintf(w, "Left alone: %s\n", strings.Join(p.Plan.Ignored, ", "))
	}
	_, err := fmt.Fprintf(w, "Plan: %d checks; they only read the hosts: nothing is stopped, started or written\n", len(p.Plan.Steps))
	return err
}

// readSmallFile reads a file of at most max bytes.
func readSmallFile(file string, max int64) (string, error) {
	st, err := os.Stat(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, errNoPath(err))
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a file", file)
	}
	if st.Size() > max {
		return "", fmt.Errorf("%s: %d bytes, more than %d", file, st.Size(), max)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, errNoPath(err))
	}
	return string(b), nil
}

// readPrivateKey reads a PEM private key and, when it is encrypted, its
// passphrase (from the terminal, or stdin with fromStdin), checking that
// the key parses before anything is sent.
func (a *App) readPrivateKey(ctx context.Context, file string, fromStdin bool) (key, passphrase string, err error) {
	key, err = readSmallFile(file, 64<<10)
	if err != nil {
		return "", "", usageError("private key %v", err)
	}
	_, perr := ssh.ParseRawPrivateKey([]byte(key))
	var missing *ssh.PassphraseMissingError
	switch {
	case perr == nil:
		if fromStdin {
			return "", "", usageError("private key %s is not encrypted: drop --passphrase-stdin", file)
		}
		return key, "", nil
	case errors.As(perr, &missing):
		passphrase, err = a.readSecret(ctx, "Passphrase of "+file+": ", fromStdin, "pass --passphrase-stdin and the passphrase on stdin")
		if err != nil {
			return "", "", err
		}
		if _, err := ssh.ParseRawPrivateKeyWithPassphrase([]byte(key), []byte(passphrase)); err != nil {
			return "", "", usageError("private key %s: the passphrase does not open it (%v)", file, err)
		}
		return key, passphrase, nil
	default:
		return "", "", usageError("private key %s: %v (want one PEM private key: OpenSSH, PKCS#1, PKCS#8 or SEC 1)", file, perr)
	}
}
