package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

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
(or read from stdin with --passphrase-stdin).`,
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
			body := map[string]any{"name": name, "meta": meta, "ssh_key": key}
			if pass != "" {
				body["ssh_key_passphrase"] = pass
			}
			if group != "" {
				body["group"] = group
			}
			return a.runChange(cmd.Context(), change{What: "import of " + name, Method: http.MethodPost,
				Path: "/api/v1/clusters/import", Body: body, Yes: f.yes, DryRun: f.dryRun, ErrorPrefix: filepath.Join(dir, "meta.yaml")})
		},
	}
	addChangeFlags(cmd, &f)
	cmd.Flags().StringVar(&name, "name", "", "the cluster's name in dmgr (default: the directory's name)")
	cmd.Flags().StringVar(&group, "group", "", "the group that owns the cluster and its machines (default: default)")
	cmd.Flags().StringVarP(&keyFile, "identity-file", "i", "", "the SSH private key (default: TIUP_CLUSTER_DIR/ssh/id_rsa)")
	cmd.Flags().BoolVar(&passStdin, "passphrase-stdin", false, "read the key's passphrase from stdin")
	return cmd
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
