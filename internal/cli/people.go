package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"gopkg.in/yaml.v3"

	"github.com/dmgr/dmgr/domain"
)

// People: users, groups with their members and approval policy, API
// tokens, and approval requests (the [8] model). Each command is one
// request to the API; -o json|yaml prints the API's answer as is.

// addPeopleCommands adds user, group, token and approval.
func (a *App) addPeopleCommands(root *cobra.Command) {
	root.AddCommand(a.admUserCommand(), a.admGroupCommand(), a.admTokenCommand(), a.admApprovalCommand())
}

// roleNames are the member roles, from least to most (the domain's).
func roleNames() []string {
	names := make([]string, len(domain.MemberRoles))
	for i, r := range domain.MemberRoles {
		names[i] = string(r)
	}
	return names
}

// checkRole refuses a role that is not one of the domain's (usage error,
// exit status 2).
func checkRole(role string) error {
	if !domain.MemberRole(role).Valid() {
		return usageError("role %q: use viewer, operator or admin", role)
	}
	return nil
}

// admMaxPasswordLine bounds what --password-stdin reads (the server takes at
// most 1024 bytes and says so).
const admMaxPasswordLine = 64 << 10

// ---- shapes of the API's answers (only what the tables show) ----

type admUser struct {
	Name       string    `json:"name"`
	SuperAdmin bool      `json:"super_admin"`
	Disabled   bool      `json:"disabled"`
	CreatedAt  time.Time `json:"created_at"`
}

type admPolicy struct {
	Commands      []string          `json:"commands"`
	ClusterLabels map[string]string `json:"cluster_labels"`
	TTL           string            `json:"ttl"`
}

type admGroup struct {
	ID      string            `json:"id"`
	Name    string            `json:"name"`
	Members map[string]string `json:"members"`
	Policy  admPolicy         `json:"approval_policy"`
}

// tokenDoc is an API token or session as the API answers it: the answer
// of a login or of POST /api/v1/tokens holds its secret, a list never.
type tokenDoc struct {
	domain.Token
	Secret string `json:"token"`
}

// admDo sends one request with the command's login and decodes the answer
// into out (a *json.RawMessage keeps it as is).
func (a *App) admDo(cmd *cobra.Command, req Request, out any) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	_, err = c.Do(cmd.Context(), req, out)
	return err
}

// admSay prints a line for the table output; -o json|yaml print only
// the API's answers, so a script reads one document.
func (a *App) admSay(format string, args ...any) {
	if a.output == OutputJSON || a.output == OutputYAML {
		return
	}
	fmt.Fprintf(a.Stdout, format, args...)
}

func admYesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// ---- passwords ----

// admNewPassword reads a new password: from the terminal without echo,
// twice, unless fromStdin is set or stdin is not a terminal; then it is
// the first line of stdin.
func (a *App) admNewPassword(fromStdin bool, user string) (string, error) {
	f, ok := a.Stdin.(interface{ Fd() uintptr })
	if !fromStdin && ok && isTerminal(a.Stdin) {
		fd := int(f.Fd())
		fmt.Fprintf(a.Stderr, "New password for %s: ", user)
		p1, err := term.ReadPassword(fd)
		fmt.Fprintln(a.Stderr)
		if err != nil {
			return "", fmt.Errorf("read the password: %w", err)
		}
		if len(p1) == 0 {
			return "", usageError("no password given: nothing was changed")
		}
		fmt.Fprintf(a.Stderr, "Repeat it: ")
		p2, err := term.ReadPassword(fd)
		fmt.Fprintln(a.Stderr)
		if err != nil {
			return "", fmt.Errorf("read the password: %w", err)
		}
		if !bytes.Equal(p1, p2) {
			return "", &ExitError{Code: 1, Err: errors.New("the two passwords differ: nothing was changed")}
		}
		return string(p1), nil
	}
	line, err := bufio.NewReader(io.LimitReader(a.Stdin, admMaxPasswordLine)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("read the password from stdin: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if pw == "" {
		return "", usageError("no password on stdin: give it on the first line (echo \"$PASSWORD\" | dmgr … --password-stdin), or run on a terminal to be asked")
	}
	return pw, nil
}

// ---- dmgr user ----

func (a *App) admUserCommand() *cobra.Command {
	user := &cobra.Command{
		Use:   "user",
		Short: "Manage users: create, list, show, disable, enable, delete, passwd",
		Long: `Manage the users who log in to dmgr. Creating, disabling, enabling and
deleting users is for super admins; a user may set their own password.`,
		Example: `  dmgr user create bob
  dmgr user list`,
		Args: cobra.ArbitraryArgs,
	}
	var pwStdin, super bool
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a user with a password (super admins)",
		Long: `Create a user with a password. The password is asked twice on the terminal,
without echo; with --password-stdin, or when stdin is not a terminal, it is
the first line of stdin. It needs at least 8 characters. --super-admin makes
a super admin, who may do everything in every group.`,
		Example: `  dmgr user create bob
  printf '%s\n' "$BOB_PASSWORD" | dmgr user create bob --password-stdin
  dmgr user create carol --super-admin`,
		Args: args(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := a.admNewPassword(pwStdin, args[0])
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := a.admDo(cmd, Request{Method: "POST", Path: "/api/v1/users", Idempotent: true,
				Body: map[string]any{"name": args[0], "password": pw, "super_admin": super}}, &raw); err != nil {
				return err
			}
			return a.print(raw, func(w io.Writer) error { return admWriteUser(w, raw, "Created user") })
		},
	}
	create.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of stdin")
	create.Flags().BoolVar(&super, "super-admin", false, "make the user a super admin")

	list := a.listCommand(listSpec{path: "/api/v1/users", noun: "users", short: "List users, by name (super admins)",
		example: "  dmgr user list\n  dmgr user list --all -o json"}, nil, admWriteUsers)

	show := &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a user (super admins, or the user themself)",
		Example: "  dmgr user show bob",
		Args:    args(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := a.admDo(cmd, Request{Method: "GET", Path: pathf("/api/v1/users/%s", args[0])}, &raw); err != nil {
				return err
			}
			return a.print(raw, func(w io.Writer) error { return admWriteUser(w, raw, "") })
		},
	}
	toggle := func(verb, short, said string) *cobra.Command {
		return &cobra.Command{
			Use:     verb + " NAME",
			Short:   short,
			Example: "  dmgr user " + verb + " bob",
			Args:    args(1, 1, "NAME"),
			RunE: func(cmd *cobra.Command, args []string) error {
				var raw json.RawMessage
				if err := a.admDo(cmd, Request{Method: "POST", Path: pathf("/api/v1/users/%s/"+verb, args[0]), Idempotent: true}, &raw); err != nil {
					return err
				}
				return a.print(raw, func(w io.Writer) error {
					_, err := fmt.Fprintf(w, said+"\n", args[0])
					return err
				})
			},
		}
	}
	disable := toggle("disable", "Disable a user (super admins): their sessions and tokens stop working at once",
		"User %s is disabled: their sessions and tokens no longer work.")
	enable := toggle("enable", "Enable a disabled user (super admins)", "User %s is enabled.")

	var yes bool
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a user (super admins): their sessions and tokens end",
		Long: `Delete a user: their sessions and API tokens end and their password hash is
deleted. Asks for confirmation unless --yes.`,
		Example: "  dmgr user delete bob --yes",
		Args:    args(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.confirm(yes, fmt.Sprintf("Delete user %s? Their sessions and tokens end", args[0])); err != nil {
				return err
			}
			if err := a.admDo(cmd, Request{Method: "DELETE", Path: pathf("/api/v1/users/%s", args[0]), Idempotent: true}, nil); err != nil {
				return err
			}
			a.admSay("Deleted user %s.\n", args[0])
			return nil
		},
	}
	del.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")

	var passwdStdin bool
	passwd := &cobra.Command{
		Use:   "passwd NAME",
		Short: "Set a user's password (super admins for anyone, a user for themself); their sessions end",
		Long: `Set a user's password. It is asked twice on the terminal, without echo; with
--password-stdin, or when stdin is not a terminal, it is the first line of
stdin. The user's sessions end (API tokens keep working).`,
		Example: `  dmgr user passwd bob
  printf '%s\n' "$NEW_PASSWORD" | dmgr user passwd bob --password-stdin`,
		Args: args(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := a.admNewPassword(passwdStdin, args[0])
			if err != nil {
				return err
			}
			if err := a.admDo(cmd, Request{Method: "PUT", Path: pathf("/api/v1/users/%s/password", args[0]), Idempotent: true,
				Body: map[string]string{"password": pw}}, nil); err != nil {
				return err
			}
			a.admSay("Password of %s set; their sessions have ended.\n", args[0])
			return nil
		},
	}
	passwd.Flags().BoolVar(&passwdStdin, "password-stdin", false, "read the password from the first line of stdin")
	user.AddCommand(create, list, show, disable, enable, del, passwd)
	return user
}

func admWriteUser(w io.Writer, raw json.RawMessage, heading string) error {
	u, err := decodeDoc[admUser](raw)
	if err != nil {
		return err
	}
	if heading != "" {
		if _, err := fmt.Fprintf(w, "%s %s.\n", heading, u.Name); err != nil {
			return err
		}
	}
	return KeyValues(w, [2]string{"Name", u.Name}, [2]string{"Super admin", admYesNo(u.SuperAdmin)},
		[2]string{"Disabled", admYesNo(u.Disabled)}, [2]string{"Created", admTime(u.CreatedAt)})
}

var admWriteUsers = itemsTable([]string{"Name", "Super admin", "Disabled", "Created"}, func(u admUser) []string {
	return []string{u.Name, admYesNo(u.SuperAdmin), admYesNo(u.Disabled), admTime(u.CreatedAt)}
})

// ---- dmgr group ----

func (a *App) admGroupCommand() *cobra.Command {
	group := &cobra.Command{
		Use:   "group",
		Short: "Manage groups: their members (viewer, operator, admin) and approval policy",
		Long: `Every cluster, machine and package belongs to a group; a user's role in a
group says what they may do with what it owns: a viewer reads, an operator
also runs commands and approves requests, an admin also manages the members,
the approval policy and cluster labels. Super admins create, rename and
delete groups.`,
		Example: `  dmgr group create payments
  dmgr group member set payments bob operator
  dmgr group policy set payments --command destroy --command upgrade --label env=prod --ttl 24h`,
		Args: cobra.ArbitraryArgs,
	}
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a group (super admins)",
		Long: `Create a group. Its id is its first name, never given again. Its approval
policy starts as the default: destroy, scale-in, upgrade, reload and patch on
clusters labelled env=prod wait for approval, for up to 24h.`,
		Example: "  dmgr group create payments",
		Args:    args(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := a.admDo(cmd, Request{Method: "POST", Path: "/api/v1/groups", Idempotent: true, Body: map[string]string{"name": args[0]}}, &raw); err != nil {
				return err
			}
			return a.print(raw, func(w io.Writer) error { return admWriteGroup(w, raw, "Created group") })
		},
	}
	list := a.listCommand(listSpec{path: "/api/v1/groups", noun: "groups", short: "List the groups you are a member of (every group for super admins)",
		long: "List the groups you are a member of (every group for super admins), by id.", example: "  dmgr group list"}, nil, admWriteGroups)
	show := &cobra.Command{
		Use:     "show GROUP",
		Short:   "Show a group: its members and approval policy (its members and super admins)",
		Example: "  dmgr group show payments",
		Args:    args(1, 1, "GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := a.admDo(cmd, Request{Method: "GET", Path: pathf("/api/v1/groups/%s", args[0])}, &raw); err != nil {
				return err
			}
			return a.print(raw, func(w io.Writer) error { return admWriteGroup(w, raw, "") })
		},
	}
	rename := &cobra.Command{
		Use:     "rename GROUP NEW-NAME",
		Short:   "Rename a group (super admins); its id, and what it owns, stay",
		Example: "  dmgr group rename payments billing",
		Args:    args(2, 2, "GROUP NEW-NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := a.admDo(cmd, Request{Method: "PUT", Path: pathf("/api/v1/groups/%s", args[0]), Idempotent: true, Body: map[string]string{"name": args[1]}}, &raw); err != nil {
				return err
			}
			return a.print(raw, func(w io.Writer) error { return admWriteGroup(w, raw, "Renamed "+args[0]+"; now group") })
		},
	}
	var yes bool
	del := &cobra.Command{
		Use:   "delete GROUP",
		Short: "Delete a group that owns nothing (super admins)",
		Long: `Delete a group. A group that still owns clusters, machines or packages is
not deleted (move them first). Asks for confirmation unless --yes.`,
		Example: "  dmgr group delete payments --yes",
		Args:    args(1, 1, "GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.confirm(yes, fmt.Sprintf("Delete group %s? Its members lose their roles in it", args[0])); err != nil {
				return err
			}
			if err := a.admDo(cmd, Request{Method: "DELETE", Path: pathf("/api/v1/groups/%s", args[0]), Idempotent: true}, nil); err != nil {
				return err
			}
			a.admSay("Deleted group %s.\n", args[0])
			return nil
		},
	}
	del.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	group.AddCommand(create, list, show, rename, del, a.admMemberCommand(), a.admPolicyCommand())
	return group
}

func (a *App) admMemberCommand() *cobra.Command {
	member := &cobra.Command{
		Use:     "member",
		Short:   "Set or remove a group's members (the group's admins and super admins)",
		Example: "  dmgr group member set payments bob operator\n  dmgr group member rm payments bob",
		Args:    cobra.ArbitraryArgs,
	}
	set := &cobra.Command{
		Use:   "set GROUP USER ROLE",
		Short: "Make USER a member of GROUP with ROLE: viewer, operator or admin",
		Long: `Make a user a member of a group, or change their role there:
  viewer    reads the group's clusters, machines, packages, operations,
            approval requests and audit trail
  operator  also runs commands on them, and approves or rejects requests
  admin     also manages the members, the approval policy and cluster labels`,
		Example: "  dmgr group member set payments bob operator",
		Args:    args(3, 3, "GROUP USER viewer|operator|admin"),
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 2 {
				return roleNames(), cobra.ShellCompDirectiveNoFileComp
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkRole(args[2]); err != nil {
				return err
			}
			var raw json.RawMessage
			if err := a.admDo(cmd, Request{Method: "PUT", Path: pathf("/api/v1/groups/%s/members/%s", args[0], args[1]), Idempotent: true,
				Body: map[string]string{"role": args[2]}}, &raw); err != nil {
				return err
			}
			return a.print(raw, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s is %s in group %s.\n", args[1], args[2], args[0])
				return err
			})
		},
	}
	rm := &cobra.Command{
		Use:     "rm GROUP USER",
		Aliases: []string{"remove"},
		Short:   "Remove USER from GROUP",
		Example: "  dmgr group member rm payments bob",
		Args:    args(2, 2, "GROUP USER"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := a.admDo(cmd, Request{Method: "DELETE", Path: pathf("/api/v1/groups/%s/members/%s", args[0], args[1]), Idempotent: true}, &raw); err != nil {
				return err
			}
			return a.print(raw, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s is no longer a member of group %s.\n", args[1], args[0])
				return err
			})
		},
	}
	member.AddCommand(set, rm)
	return member
}

func (a *App) admPolicyCommand() *cobra.Command {
	policy := &cobra.Command{
		Use:     "policy",
		Short:   "Show or set a group's approval policy: which commands wait for a second person",
		Example: "  dmgr group policy show payments\n  dmgr group policy set payments --command destroy --label env=prod --ttl 24h",
		Args:    cobra.ArbitraryArgs,
	}
	show := &cobra.Command{
		Use:     "show GROUP",
		Short:   "Show a group's approval policy",
		Example: "  dmgr group policy show payments -o yaml",
		Args:    args(1, 1, "GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := a.admDo(cmd, Request{Method: "GET", Path: pathf("/api/v1/groups/%s", args[0])}, &raw); err != nil {
				return err
			}
			return a.admPrintPolicy(raw)
		},
	}
	var (
		commands, labels []string
		ttl              string
		off              bool
	)
	set := &cobra.Command{
		Use:   "set GROUP (--command CMD … [--label KEY=VALUE …] [--ttl D] | --off)",
		Short: "Replace a group's approval policy (the group's admins and super admins)",
		Long: `Replace a group's approval policy: the cluster commands given with --command
(deploy, scale-out, scale-in, upgrade, patch, rollback, start, stop, restart,
reload, destroy) wait for the approval of another operator of the group when
the cluster carries every --label (no --label: every cluster of the group).
A request expires after --ttl (a duration such as 8h, or days such as 7d;
from 1m to 720h; 24h when not given). --off holds no command.
The whole policy is replaced: give every command and label it should keep.`,
		Example: `  dmgr group policy set payments --command destroy --command upgrade --label env=prod --ttl 24h
  dmgr group policy set payments --command destroy,scale-in --ttl 7d
  dmgr group policy set payments --off`,
		Args: args(1, 1, "GROUP --command CMD … [--label KEY=VALUE …] [--ttl D]"),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := admPolicyBody(commands, labels, ttl, off)
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := a.admDo(cmd, Request{Method: "PUT", Path: pathf("/api/v1/groups/%s/policy", args[0]), Idempotent: true, Body: body}, &raw); err != nil {
				return err
			}
			return a.admPrintPolicy(raw)
		},
	}
	fl := set.Flags()
	fl.StringSliceVar(&commands, "command", nil, "a command that waits for approval (repeat, or comma-separate)")
	fl.StringArrayVar(&labels, "label", nil, "KEY=VALUE: hold only on clusters with this label (repeat for several; all must match)")
	fl.StringVar(&ttl, "ttl", "", "how long a request waits before it expires (8h, 7d; default 24h)")
	fl.BoolVar(&off, "off", false, "hold no command: approvals are off for the group")
	_ = set.RegisterFlagCompletionFunc("command", cobra.FixedCompletions(domain.ApprovableCommands, cobra.ShellCompDirectiveNoFileComp))
	policy.AddCommand(show, set)
	return policy
}

// admPolicyBody is the body of PUT /api/v1/groups/{group}/policy for the
// flags of dmgr group policy set; bad flags are usage errors.
func admPolicyBody(commands, labels []string, ttl string, off bool) (map[string]any, error) {
	cmds := []string{}
	for _, c := range commands {
		if c = strings.TrimSpace(c); c != "" && !slices.Contains(cmds, c) {
			cmds = append(cmds, c)
		}
	}
	switch {
	case off && len(cmds) > 0:
		return nil, usageError("--off holds no command: give either --off or --command")
	case off && (len(labels) > 0 || ttl != ""):
		return nil, usageError("--off holds no command: --label and --ttl mean nothing with it")
	case !off && len(cmds) == 0:
		return nil, usageError("give the commands that wait for approval with --command (destroy, upgrade, …), or --off to hold none")
	}
	ls := map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, usageError("--label %q: give KEY=VALUE, e.g. env=prod", l)
		}
		if old, dup := ls[k]; dup && old != v {
			return nil, usageError("--label %s is given twice (%s and %s)", k, old, v)
		}
		ls[k] = v
	}
	body := map[string]any{"commands": cmds, "cluster_labels": ls}
	if ttl = strings.TrimSpace(ttl); ttl != "" {
		d, err := admParseDuration(ttl)
		if err != nil || d <= 0 {
			return nil, usageError("--ttl %q: give a duration such as 8h or 7d", ttl)
		}
		body["ttl"] = ttl
	}
	return body, nil
}

// admPrintPolicy prints the approval policy of a group answer: -o json|yaml
// its approval_policy object as the API names it.
func (a *App) admPrintPolicy(groupRaw json.RawMessage) error {
	var g map[string]json.RawMessage
	if err := json.Unmarshal(groupRaw, &g); err != nil || g["approval_policy"] == nil {
		return fmt.Errorf("the answer has no approval_policy; is the server the same version?")
	}
	raw := g["approval_policy"]
	return a.print(raw, func(w io.Writer) error {
		p, err := decodeDoc[admPolicy](raw)
		if err != nil {
			return err
		}
		cmds := strings.Join(p.Commands, ", ")
		if cmds == "" {
			cmds = "none: approvals are off"
		}
		labels := labelsText(p.ClusterLabels)
		if labels == "" {
			labels = "any: every cluster of the group"
		}
		return KeyValues(w, [2]string{"Commands held", cmds}, [2]string{"Cluster labels", labels}, [2]string{"Requests expire after", p.TTL})
	})
}

// admPolicyText is a policy in one line.
func admPolicyText(p admPolicy) string {
	if len(p.Commands) == 0 {
		return "off"
	}
	where := "every cluster"
	if l := labelsText(p.ClusterLabels); l != "" {
		where = l
	}
	return fmt.Sprintf("%s on %s, %s", strings.Join(p.Commands, ","), where, p.TTL)
}

func admWriteGroup(w io.Writer, raw json.RawMessage, heading string) error {
	g, err := decodeDoc[admGroup](raw)
	if err != nil {
		return err
	}
	if heading != "" {
		if _, err := fmt.Fprintf(w, "%s %s.\n", heading, g.Name); err != nil {
			return err
		}
	}
	if err := KeyValues(w, [2]string{"ID", g.ID}, [2]string{"Name", g.Name}, [2]string{"Approval policy", admPolicyText(g.Policy)},
		[2]string{"Members", strconv.Itoa(len(g.Members))}); err != nil {
		return err
	}
	if len(g.Members) == 0 {
		return nil
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	t := NewTable("User", "Role")
	for _, u := range sortedKeys(g.Members) {
		t.Row(u, g.Members[u])
	}
	return t.Write(w)
}

var admWriteGroups = itemsTable([]string{"ID", "Name", "Members", "Approval policy"}, func(g admGroup) []string {
	var ms []string
	for _, u := range sortedKeys(g.Members) {
		ms = append(ms, u+":"+g.Members[u])
	}
	return []string{g.ID, g.Name, orDash(admShorten(strings.Join(ms, ","), 60)), admPolicyText(g.Policy)}
})

// ---- dmgr token ----

func (a *App) admTokenCommand() *cobra.Command {
	token := &cobra.Command{
		Use:   "token",
		Short: "Manage your API tokens: create, list, revoke",
		Long: `API tokens let scripts and CI act as you, with your roles (or only reading,
with --read-only). A token's secret is shown once, when it is made; dmgr
keeps only its hash.`,
		Example: "  dmgr token create ci --expires-in 30d\n  dmgr token list",
		Args:    cobra.ArbitraryArgs,
	}
	var (
		expiresIn string
		readOnly  bool
	)
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Make an API token that acts as you; its secret is shown only once",
		Long: `Make an API token named NAME that acts as you, with your roles, or only
reads with --read-only (a read-only login can make only read-only tokens).
It expires after --expires-in (a duration such as 720h, or days such as 30d;
at most 366 days). The secret is printed once: store it now, dmgr cannot
show it again. Use it with --token or DMGR_TOKEN.`,
		Example: `  dmgr token create ci --expires-in 30d
  dmgr token create dashboards --read-only --expires-in 90d -o json | jq -r .token`,
		Args: args(1, 1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if d, err := admParseDuration(strings.TrimSpace(expiresIn)); err != nil || d <= 0 {
				return usageError("--expires-in %q: give a duration such as 720h or 30d", expiresIn)
			}
			var raw json.RawMessage
			if err := a.admDo(cmd, Request{Method: "POST", Path: "/api/v1/tokens", Idempotent: true,
				Body: map[string]any{"name": args[0], "expires_in": strings.TrimSpace(expiresIn), "read_only": readOnly}}, &raw); err != nil {
				return err
			}
			if err := a.print(raw, func(w io.Writer) error {
				t, err := decodeDoc[tokenDoc](raw)
				if err != nil {
					return err
				}
				return KeyValues(w, [2]string{"ID", t.ID}, [2]string{"Name", t.Name}, [2]string{"User", t.User},
					[2]string{"Read only", admYesNo(t.ReadOnly)}, [2]string{"Expires", admTime(t.ExpiresAt)}, [2]string{"Token", t.Secret})
			}); err != nil {
				return err
			}
			fmt.Fprintln(a.Stderr, "This is the only time the token is shown: store it now (dmgr keeps only its hash).")
			return nil
		},
	}
	create.Flags().StringVar(&expiresIn, "expires-in", "30d", "lifetime: a duration such as 720h, or days such as 30d (at most 366d)")
	create.Flags().BoolVar(&readOnly, "read-only", false, "the token only reads")

	var kind string
	list := a.listCommand(listSpec{path: "/api/v1/tokens", noun: "tokens", short: "List your live sessions and API tokens (never their secrets)",
		example: "  dmgr token list\n  dmgr token list --kind api"},
		func() (url.Values, error) {
			if kind != "" && kind != "api" && kind != "session" {
				return nil, usageError("--kind %q: use api or session", kind)
			}
			return queryOf("kind", kind), nil
		}, admWriteTokens)
	list.Flags().StringVar(&kind, "kind", "", "only api tokens or only sessions (api, session)")
	_ = list.RegisterFlagCompletionFunc("kind", cobra.FixedCompletions([]string{"api", "session"}, cobra.ShellCompDirectiveNoFileComp))

	var yes bool
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a session or API token by its id (yours; anyone's for super admins)",
		Long: `Revoke a session (s-…) or API token (t-…) by its id, as dmgr token list
shows it (never the secret). Every server refuses it from then on. Asks for
confirmation unless --yes.`,
		Example: "  dmgr token revoke t-0190f3a2-5b1c-7d4e-8f00-123456789abc --yes",
		Args:    args(1, 1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.HasPrefix(args[0], "dmgr_") {
				return usageError("give the token's id (t-… or s-…, see dmgr token list), not its secret")
			}
			if err := a.confirm(yes, fmt.Sprintf("Revoke token %s? Whoever uses it is refused from then on", args[0])); err != nil {
				return err
			}
			if err := a.admDo(cmd, Request{Method: "DELETE", Path: pathf("/api/v1/tokens/%s", args[0])}, nil); err != nil {
				return err
			}
			a.admSay("Revoked token %s.\n", args[0])
			return nil
		},
	}
	revoke.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	token.AddCommand(create, list, revoke)
	return token
}

var admWriteTokens = itemsTable([]string{"ID", "Name", "Kind", "Read only", "Created", "Expires"}, func(k tokenDoc) []string {
	return []string{k.ID, k.Name, k.Kind, admYesNo(k.ReadOnly), admTime(k.CreatedAt), admTime(k.ExpiresAt)}
})

// ---- dmgr approval ----

func (a *App) admApprovalCommand() *cobra.Command {
	approval := &cobra.Command{
		Use:   "approval",
		Short: "Approval requests: list, show, approve, reject, withdraw",
		Long: `A cluster command that its group's approval policy names is not run: it is
held as an approval request. Another operator or admin of the group (never
the requester) approves it, and it runs then, as its requester; or rejects
it. The requester may withdraw it. A request expires after the policy's ttl.`,
		Example: `  dmgr approval list --state pending
  dmgr approval show 0190f3a2-5b1c-7d4e-8f00-123456789abc
  dmgr approval approve 0190f3a2-5b1c-7d4e-8f00-123456789abc --comment "ticket OPS-42"`,
		Args: cobra.ArbitraryArgs,
	}
	var state, group string
	list := a.listCommand(listSpec{path: "/api/v1/approvals", noun: "requests",
		short: "List the approval requests of your groups (every group for super admins)",
		long: `List approval requests, by id. --state pending is an approver's inbox.
A pending request past its expiry shows as expired.`,
		example: "  dmgr approval list --state pending\n  dmgr approval list --group payments -o json"},
		func() (url.Values, error) {
			if state != "" && !slices.Contains(domain.ApprovalStates, state) {
				return nil, usageError("--state %q: use %s", state, strings.Join(domain.ApprovalStates, ", "))
			}
			return queryOf("state", state, "group", group), nil
		}, admWriteApprovals)
	list.Flags().StringVar(&state, "state", "", "only requests in this state: pending, approved, rejected, expired, withdrawn")
	list.Flags().StringVar(&group, "group", "", "only requests of this group (its id)")
	_ = list.RegisterFlagCompletionFunc("state", cobra.FixedCompletions(domain.ApprovalStates, cobra.ShellCompDirectiveNoFileComp))

	show := &cobra.Command{
		Use:     "show ID",
		Short:   "Show an approval request: its command, its state and the plan it would run",
		Example: "  dmgr approval show 0190f3a2-5b1c-7d4e-8f00-123456789abc",
		Args:    args(1, 1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := a.admDo(cmd, Request{Method: "GET", Path: pathf("/api/v1/approvals/%s", args[0])}, &raw); err != nil {
				return err
			}
			return a.print(raw, func(w io.Writer) error { return admWriteApproval(w, raw) })
		},
	}
	approval.AddCommand(list, show,
		a.admDecideCommand("approve", "Approve a pending request: its command runs now, as its requester",
			`Approve a pending request (an operator or admin of its group, or a super
admin; never its requester). Its command runs now, as its requester: the
operation's id is printed, with the command that follows it.`),
		a.admDecideCommand("reject", "Reject a pending request: its command never runs",
			`Reject a pending request (an operator or admin of its group, or a super
admin; never its requester). Its command never runs.`),
		a.admDecideCommand("withdraw", "Withdraw your pending request: its command never runs",
			`Withdraw a pending request (its requester, or a super admin). Its command
never runs.`))
	return approval
}

// admDecideCommand is dmgr approval approve|reject|withdraw.
func (a *App) admDecideCommand(verb, short, long string) *cobra.Command {
	var comment string
	cmd := &cobra.Command{
		Use:     verb + " ID",
		Short:   short,
		Long:    long,
		Example: fmt.Sprintf("  dmgr approval %s 0190f3a2-5b1c-7d4e-8f00-123456789abc --comment \"ticket OPS-42\"", verb),
		Args:    args(1, 1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var raw json.RawMessage
			if err := a.admDo(cmd, Request{Method: "POST", Path: pathf("/api/v1/approvals/%s/"+verb, args[0]), Idempotent: true,
				Body: map[string]string{"comment": comment}}, &raw); err != nil {
				return err
			}
			return a.print(raw, func(w io.Writer) error {
				ap, err := decodeDoc[domain.Approval](raw)
				if err != nil {
					return err
				}
				return admWriteDecision(w, verb, ap)
			})
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "why (kept with the decision, up to 2048 bytes)")
	return cmd
}

// admWriteDecision says what a decision did; an approval names the operation
// it started and how to follow it.
func admWriteDecision(w io.Writer, verb string, ap domain.Approval) error {
	what := admCommandText(ap)
	var err error
	switch verb {
	case "approve":
		if ap.OperationID == "" {
			return fmt.Errorf("approval %s: the server started no operation; is the server the same version?", ap.ID)
		}
		_, err = fmt.Fprintf(w, "Approved %s: %s, requested by %s, runs now as %s.\nOperation: %s\nFollow it: dmgr operation watch %s\n",
			ap.ID, what, ap.Requester, ap.Requester, ap.OperationID, ap.OperationID)
	case "reject":
		_, err = fmt.Fprintf(w, "Rejected %s: %s, requested by %s, will not run.\n", ap.ID, what, ap.Requester)
	default:
		_, err = fmt.Fprintf(w, "Withdrew %s: %s will not run.\n", ap.ID, what)
	}
	return err
}

// admCommandText names a request's command: "destroy of cluster c1".
func admCommandText(ap domain.Approval) string {
	if ap.Cluster == "" {
		return ap.Command
	}
	return ap.Command + " of cluster " + ap.Cluster
}

func admWriteApprovals(w io.Writer, items []json.RawMessage) error {
	as, err := decodeItems[domain.Approval](items)
	if err != nil {
		return err
	}
	if len(as) == 0 {
		_, err := fmt.Fprintln(w, "No approval requests match.")
		return err
	}
	t := NewTable("ID", "Group", "Cluster", "Command", "Requester", "State", "Requested", "Expires", "Decided by")
	for _, ap := range as {
		expires := admTime(ap.ExpiresAt)
		if ap.State != "pending" && ap.State != "expired" {
			expires = "-"
		}
		t.Row(ap.ID, ap.Group, orDash(ap.Cluster), ap.Command, ap.Requester, ap.State, admTime(ap.RequestedAt), expires, orDash(ap.DecidedBy))
	}
	return t.Write(w)
}

// admWriteApproval prints one request: its heading, its command's
// parameters as YAML, and its plan's steps.
func admWriteApproval(w io.Writer, raw json.RawMessage) error {
	ap, err := decodeDoc[domain.Approval](raw)
	if err != nil {
		return err
	}
	kv := [][2]string{{"ID", ap.ID}, {"State", ap.State}, {"Group", ap.Group}, {"Cluster", orDash(ap.Cluster)}, {"Command", ap.Command},
		{"Requested", admTime(ap.RequestedAt) + " by " + ap.Requester}}
	switch ap.State {
	case "pending", "expired":
		kv = append(kv, [2]string{"Expires", admTime(ap.ExpiresAt)})
	}
	if ap.DecidedBy != "" {
		kv = append(kv, [2]string{"Decided", admTime(ap.DecidedAt) + " by " + ap.DecidedBy})
	}
	if ap.Comment != "" {
		kv = append(kv, [2]string{"Comment", ap.Comment})
	}
	op := ap.OperationID
	if op != "" {
		switch ap.State {
		case "approved":
			op += " (dmgr operation watch " + op + ")"
		case "pending":
			op += " (when approved)"
		default:
			op = "-"
		}
		kv = append(kv, [2]string{"Operation", op})
	}
	if err := KeyValues(w, kv...); err != nil {
		return err
	}
	if len(ap.Params) > 0 && string(ap.Params) != "null" {
		params, err := admYAML(ap.Params)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "\nThe command, as requested:\n%s", admIndent(params, "  ")); err != nil {
			return err
		}
	}
	return admWritePlan(w, ap.Plan)
}

// admStep is what the plan table shows of a step.
type admStep struct {
	ID       string   `json:"id"`
	Kind     string   `json:"kind"`
	Host     string   `json:"host"`
	Instance string   `json:"instance"`
	Needs    []string `json:"needs"`
}

// admWritePlan prints the plan a request keeps: its steps, or the summary
// that replaced a large plan.
func admWritePlan(w io.Writer, raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		_, err := fmt.Fprintln(w, "\nNo plan was kept with the request.")
		return err
	}
	var p struct {
		Steps   []admStep `json:"steps"`
		Summary string    `json:"summary"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return fmt.Errorf("the request's plan is not what this dmgr expects (%w); is the server the same version?", err)
	}
	if p.Summary != "" {
		_, err := fmt.Fprintf(w, "\nPlan: %s\n", p.Summary)
		return err
	}
	if _, err := fmt.Fprintf(w, "\nPlan (%d steps, each after the ones it needs):\n", len(p.Steps)); err != nil {
		return err
	}
	t := NewTable("Step", "Kind", "Host", "Instance", "Needs")
	for _, s := range p.Steps {
		t.Row(s.ID, s.Kind, orDash(s.Host), orDash(s.Instance), orDash(strings.Join(s.Needs, ",")))
	}
	var b strings.Builder
	if err := t.Write(&b); err != nil {
		return err
	}
	_, err := io.WriteString(w, admIndent(b.String(), "  "))
	return err
}

// admYAML prints JSON as block YAML: no empty values, multi-line
// strings (a topology) as literal blocks.
func admYAML(raw json.RawMessage) (string, error) {
	var n yaml.Node
	if err := yaml.Unmarshal(raw, &n); err != nil {
		return "", fmt.Errorf("print the command: %w", err)
	}
	admYAMLNode(&n)
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return "", fmt.Errorf("print the command: %w", err)
	}
	if err := enc.Close(); err != nil {
		return "", fmt.Errorf("print the command: %w", err)
	}
	return b.String(), nil
}

func admYAMLNode(n *yaml.Node) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		n.Style = 0
	case yaml.MappingNode:
		n.Style = 0
		var kept []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			v := n.Content[i+1]
			if v.Kind == yaml.ScalarNode && (v.Tag == "!!null" || (v.Tag == "!!str" && v.Value == "")) {
				continue
			}
			kept = append(kept, n.Content[i], v)
		}
		n.Content = kept
	case yaml.ScalarNode:
		switch {
		case strings.Contains(n.Value, "\n"):
			n.Style = yaml.LiteralStyle
		case n.Style == yaml.DoubleQuotedStyle && n.Tag == "!!str":
			n.Style = 0
		}
	}
	for _, c := range n.Content {
		admYAMLNode(c)
	}
}

// admIndent puts prefix before every non-empty line of s.
func admIndent(s, prefix string) string {
	var b strings.Builder
	for line := range strings.SplitAfterSeq(s, "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString(prefix)
		}
		b.WriteString(line)
	}
	return b.String()
}
