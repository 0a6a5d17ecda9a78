package service

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dmgr/dmgr/agents/remote"
	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/secrets"
	"github.com/dmgr/dmgr/internal/tiupmeta"
)

// Taking over a cluster that tiup-dm manages (domain/import.go). Before
// anything is recorded, the import checks what it can without writing:
// the meta.yaml, the key, the name, the version's package, the group of
// the machines already registered, the ports and directories of the
// other clusters — then logs in to every host of the topology with the
// given key (reading each new host's SSH host key first, to pin it), and
// reads there how the instances run. Only then are the key stored (once
// per new machine, bound to it) and the cluster, the machines and their
// reservations recorded, in one atomic batch. The import operation's
// steps then check each instance and the cluster, reading only.

// ImportClusterRequest is the body of an import: the cluster's name, its
// meta.yaml and the private key tiup-dm logs in with.
type ImportClusterRequest struct {
	Name string `json:"name"`
	// Meta is the text of ~/.tiup/storage/dm/clusters/<name>/meta.yaml.
	Meta string `json:"meta"`
	// SSHKey is the PEM private key of ~/.tiup/storage/dm/clusters/<name>/ssh/id_rsa
	// (with SSHKeyPassphrase when it is encrypted). It never enters an
	// event: json "-" keeps it out of a request held for approval, which
	// keeps the key in the vault instead (HeldKey).
	SSHKey           string `json:"-"`
	SSHKeyPassphrase string `json:"-"`
	// Group will own the cluster and the machines the import registers
	// ("": DefaultGroup).
	Group  string            `json:"group,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// ServiceManager says how the instances run (systemd or none); ""
	// reads it from the hosts: tiup's systemd units, or pid files.
	ServiceManager string `json:"service_manager,omitempty"`
	// HeldKey is the vault id of the key of a request held for approval
	// (owner heldKeyOwner(Name)).
	HeldKey string `json:"held_key,omitempty"`
}

// ImportPlan is an import's dry run: the cluster it would record, its
// hosts (registered with it, or machines already), and the steps that
// check it.
type ImportPlan struct {
	Cluster  domain.ClusterImported `json:"cluster"`
	Machines []ImportMachine        `json:"machines"`
	Steps    []domain.Step          `json:"steps"`
	// Ignored are the sections of the topology dmgr leaves alone
	// (monitored: tiup's node_exporter and blackbox_exporter).
	Ignored []string `json:"ignored,omitempty"`
}

// ImportMachine is one host of an import.
type ImportMachine struct {
	Host    string `json:"host"`
	Address string `json:"address"`
	SSHPort int    `json:"ssh_port"`
	User    string `json:"user"`
	// Registered: a machine already, used as it is; otherwise the import
	// registers it with this host key (read from it now) and the key.
	Registered         bool   `json:"registered"`
	HostKeyFingerprint string `json:"host_key_fingerprint"`
}

// Deadlines of the checks an import makes on its hosts, which run side by
// side: a host's name resolved (resolveTimeout), its host key read
// (scanTimeout), one login; within the request's deadline (30 s by
// default) even for a host that does not answer at all.
const (
	importLoginTimeout  = 10 * time.Second
	importProbeParallel = 8
)

// ImportCluster takes over a cluster that tiup-dm manages: it checks it
// (hosts answering, the key logging in, nothing of dmgr's in the way),
// stores the key for each host it registers and records the cluster, the
// machines and the import operation.
func (s *Service) ImportCluster(ctx context.Context, meta Meta, r ImportClusterRequest) (Accepted, error) {
	meta = s.complete(meta)
	prep, err := s.prepareImport(ctx, r)
	if err != nil {
		return Accepted{}, err
	}
	release, err := s.admitInventory(ctx, "import of cluster "+r.Name)
	if err != nil {
		return Accepted{}, err
	}
	defer release()
	creds := map[string]string{}
	drop := func(hosts ...string) {
		for _, h := range hosts {
			if id, ok := creds[h]; ok {
				s.deleteCredential(ctx, id, "remove the credential of a machine an import did not register")
				delete(creds, h)
			}
		}
	}
	for _, h := range prep.hosts {
		if h.registered {
			continue
		}
		id, err := s.vault.Put(ctx, secrets.KindPrivateKey, prep.key, h.host) // bound to the machine: opens for it only
		if err != nil {
			drop(slices.Collect(maps.Keys(creds))...)
			return Accepted{}, err
		}
		creds[h.host] = id
	}
	var registered []string
	acc, err := s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		d, reg, err := s.decideImport(ctx, prep, creds, meta.OperationID)
		registered = reg
		return d, err
	})
	if err != nil {
		drop(slices.Collect(maps.Keys(creds))...)
		return Accepted{}, err
	}
	// A host registered by someone else meanwhile was used as it is.
	var unused []string
	for h := range creds {
		if !slices.Contains(registered, h) {
			unused = append(unused, h)
		}
	}
	drop(unused...)
	if r.HeldKey != "" {
		s.deleteCredential(ctx, r.HeldKey, "delete the key of an approved import (the machines have their own copies)")
	}
	s.log.Info().Str("cluster", r.Name).Str("operation", acc.OperationID).Uint64("commit_seq", acc.CommitSeq).
		Str("version", prep.meta.Version).Str("service_manager", prep.serviceManager).Strs("registered", registered).
		Int("instances", len(prep.meta.Parsed.Instances)).Str("actor", meta.Actor).Msg("cluster import recorded")
	return acc, nil
}

// PlanImportCluster is ImportCluster's dry run: every check, the hosts
// logged in to and read, nothing stored or recorded.
func (s *Service) PlanImportCluster(ctx context.Context, r ImportClusterRequest) (ImportPlan, error) {
	prep, err := s.prepareImport(ctx, r)
	if err != nil {
		return ImportPlan{}, err
	}
	pending := map[string]string{}
	for _, h := range prep.hosts {
		pending[h.host] = "pending"
	}
	d, _, err := s.decideImport(ctx, prep, pending, "dry-run")
	if err != nil {
		return ImportPlan{}, err
	}
	plan := ImportPlan{Cluster: d.events[0].(domain.ClusterImported), Steps: d.events[1].(domain.OperationRequested).Plan, Ignored: prep.meta.Ignored}
	for _, h := range prep.hosts {
		plan.Machines = append(plan.Machines, ImportMachine{Host: h.host, Address: h.address, SSHPort: h.port, User: prep.meta.User,
			Registered: h.registered, HostKeyFingerprint: h.hostKey.Fingerprint})
	}
	return plan, nil
}

// importPrep is an import checked as far as it can be without recording
// anything.
type importPrep struct {
	req            ImportClusterRequest
	meta           tiupmeta.Meta
	group          string
	key            []byte
	serviceManager string
	hosts          []importHost // the topology's, in order
}

// importHost is one host of an import as the checks found it.
type importHost struct {
	host       string
	address    string
	port       int
	registered bool
	hostKey    domain.HostKey
}

// prepareImport checks an import: its input, then a decision on the
// current inventory (name, package, group, clashes) with the hosts' keys
// not yet read, then the hosts themselves.
func (s *Service) prepareImport(ctx context.Context, r ImportClusterRequest) (*importPrep, error) {
	if r.Name == "" {
		return nil, domain.Errorf(domain.Invalid, "name is required: the cluster's name in dmgr (tiup-dm's is the name of its directory under ~/.tiup/storage/dm/clusters/)")
	}
	if err := domain.ValidateClusterName(r.Name); err != nil {
		return nil, err
	}
	switch r.ServiceManager {
	case "", domain.ServiceManagerSystemd, domain.ServiceManagerNone:
	default:
		return nil, domain.Errorf(domain.Invalid, "service_manager %q is not supported: use %s (tiup-dm's units) or %s (run scripts with pid files), or leave it out to read it from the hosts",
			r.ServiceManager, domain.ServiceManagerSystemd, domain.ServiceManagerNone)
	}
	p := &importPrep{req: r, group: domain.OwnerGroup(r.Group)}
	if err := domain.ValidateGroupName(p.group); err != nil {
		return nil, err
	}
	if err := domain.ValidateLabels(r.Labels); err != nil {
		return nil, err
	}
	var err error
	if p.meta, err = tiupmeta.Parse(r.Meta); err != nil {
		return nil, err
	}
	if p.key, err = s.importKey(ctx, r); err != nil {
		return nil, err
	}
	// A decision on the inventory as it is, before any host is contacted:
	// what is refused here is refused without a connection.
	self, err := s.clusters.read(ctx, r.Name)
	if err != nil {
		return nil, err
	}
	if c := self.ptr(); c.Exists() {
		return nil, domain.Errorf(domain.Conflict, "cluster %s already exists (version %s, %s): import the cluster under another name", r.Name, c.Version, c.Status)
	}
	cmd := p.command(nil, "dry-run", s.maxInstances)
	pl, err := s.readPlacementOf(ctx, self, r.Name, domain.ImportNeeds(cmd))
	if err != nil {
		return nil, err
	}
	for _, in := range p.meta.Parsed.Instances {
		if slices.ContainsFunc(p.hosts, func(h importHost) bool { return h.host == in.Host }) {
			continue
		}
		h := importHost{host: in.Host, port: in.SSHPort}
		if m := pl.world.Machines[in.Host]; m.Active() {
			h.registered, h.address, h.port, h.hostKey = true, m.Addr(), m.SSHPort, m.HostKey
		} else if h.address, err = s.resolveHost(ctx, in.Host); err != nil {
			return nil, err
		}
		p.hosts = append(p.hosts, h)
	}
	if p.serviceManager = r.ServiceManager; p.serviceManager == "" {
		p.serviceManager = domain.ServiceManagerSystemd // for the decision before the hosts are read
	}
	cmd = p.command(placeholders(p.hosts), "dry-run", s.maxInstances)
	if _, err := domain.DecideImportCluster(pl.world, cmd); err != nil {
		return nil, err
	}
	if err := s.probeImportHosts(ctx, p); err != nil {
		return nil, err
	}
	return p, nil
}

// importKey is the import's private key: the one given, or the one a
// request held for approval keeps in the vault.
func (s *Service) importKey(ctx context.Context, r ImportClusterRequest) ([]byte, error) {
	if r.SSHKey == "" && r.HeldKey != "" {
		kind, key, err := s.vault.Get(ctx, r.HeldKey, heldKeyOwner(r.Name))
		if err != nil {
			return nil, fmt.Errorf("import %s: read the key kept for its approval: %w", r.Name, err)
		}
		if kind != secrets.KindPrivateKey {
			return nil, domain.Errorf(domain.Internal, "import %s: the credential kept for its approval is a %s", r.Name, kind)
		}
		return key, nil
	}
	if r.SSHKey == "" {
		return nil, domain.Errorf(domain.Invalid, "ssh_key is required: the private key tiup-dm logs in with (~/.tiup/storage/dm/clusters/<name>/ssh/id_rsa)")
	}
	key, err := parsePrivateKey([]byte(r.SSHKey), r.SSHKeyPassphrase)
	if err != nil {
		msg := strings.NewReplacer("private_key_passphrase", "ssh_key_passphrase", "private_key", "ssh_key").Replace(domain.ErrorMessage(err))
		return nil, domain.Errorf(domain.ErrorCode(err), "%s", msg)
	}
	return key, nil
}

// heldKeyOwner is the vault owner of the key of an import held for
// approval: no machine's host (a host has no '/'), so no step can open it.
func heldKeyOwner(cluster string) string { return "import/" + cluster }

// holdImportKey moves the key of an import that is to wait for approval
// into the vault, so that the request's events carry only its id.
func (s *Service) holdImportKey(ctx context.Context, r *ImportClusterRequest) error {
	if r.SSHKey == "" {
		return nil
	}
	key, err := s.importKey(ctx, *r)
	if err != nil {
		return err
	}
	id, err := s.vault.Put(ctx, secrets.KindPrivateKey, key, heldKeyOwner(r.Name))
	if err != nil {
		return err
	}
	r.HeldKey, r.SSHKey, r.SSHKeyPassphrase = id, "", ""
	return nil
}

// command is the domain's import command for p.
func (p *importPrep) command(machines []domain.RegisterMachine, operationID string, maxInstances int) domain.ImportCluster {
	return domain.ImportCluster{Name: p.req.Name, Group: p.group, Labels: p.req.Labels, Version: p.meta.Version, Topology: p.meta.Topology,
		User: p.meta.User, ServiceManager: p.serviceManager, NewMachines: machines, OperationID: operationID, MaxInstances: maxInstances}
}

// placeholders are the registrations of hosts whose keys are not read yet.
func placeholders(hosts []importHost) []domain.RegisterMachine {
	var out []domain.RegisterMachine
	for _, h := range hosts {
		if !h.registered {
			out = append(out, domain.RegisterMachine{Host: h.host, Address: h.address, SSHPort: h.port, User: "pending",
				Credential: domain.CredentialRef{ID: "pending", Kind: domain.CredentialPrivateKey},
				HostKey:    domain.HostKey{Key: "pending", Fingerprint: "SHA256:pending"}})
		}
	}
	return out
}

// decideImport decides an import on what it touches: the cluster, its
// machines with the clusters they list, the packages, and the identity
// claims of the machines it registers (with the machines holding them).
// It returns the hosts it registers.
func (s *Service) decideImport(ctx context.Context, p *importPrep, creds map[string]string, operationID string) (decision, []string, error) {
	var machines []domain.RegisterMachine
	for _, h := range p.hosts {
		if !h.registered {
			machines = append(machines, domain.RegisterMachine{Host: h.host, Address: h.address, SSHPort: h.port, User: p.meta.User,
				Credential: domain.CredentialRef{ID: creds[h.host], Kind: domain.CredentialPrivateKey}, HostKey: h.hostKey, Group: p.group})
		}
	}
	cmd := p.command(machines, operationID, s.maxInstances)
	self, err := s.clusters.read(ctx, p.req.Name)
	if err != nil {
		return decision{}, nil, err
	}
	pl, err := s.readPlacementOf(ctx, self, p.req.Name, domain.ImportNeeds(cmd))
	if err != nil {
		return decision{}, nil, err
	}
	// A machine registered since the checks is used as it is (its group
	// is checked by the decision); the others need their claims.
	var ids []string
	claimsOf := map[string][]string{}
	kept := machines[:0:0]
	for _, rm := range machines {
		if pl.world.Machines[rm.Host].Active() {
			continue
		}
		kept = append(kept, rm)
		claimsOf[rm.Host] = domain.MachineClaims(rm.Host, rm.Address, rm.SSHPort)
		ids = append(ids, claimsOf[rm.Host]...)
	}
	cmd.NewMachines = kept
	claims, err := s.claims.readEach(ctx, ids)
	if err != nil {
		return decision{}, nil, err
	}
	var holders []string
	for _, c := range claims {
		if o := c.state.Owner; o != "" && pl.world.Machines[o] == nil {
			holders = append(holders, o)
		}
	}
	held, err := s.machines.readEach(ctx, holders)
	if err != nil {
		return decision{}, nil, err
	}
	for host, h := range held {
		if h.exists {
			pl.world.Machines[host] = h.ptr()
		}
	}
	d, err := domain.DecideImportCluster(pl.world, cmd)
	if err != nil {
		return decision{}, nil, err
	}
	out := one(domain.AggregateCluster, p.req.Name, d.Cluster, pl.self.expect())
	placed := domain.Placements(p.req.Name, operationID, domain.PlacedInstances(d.Cluster))
	hosts := slices.Sorted(maps.Keys(placed))
	for _, host := range hosts {
		m := pl.machines[host]
		evs := slices.Concat(d.Machines[host], []domain.Event{placed[host]})
		if _, registers := d.Machines[host]; !registers {
			if gone := domain.Released(&m.state, pl.world.Clusters, p.req.Name); len(gone) > 0 {
				evs = append(evs, domain.PlacementsReleased{Clusters: gone})
			}
		}
		out.also = append(out.also, pending{aggregateType: domain.AggregateMachine, aggregateID: host, events: evs, expect: m.expect()})
	}
	registered := slices.Sorted(maps.Keys(d.Machines))
	for _, host := range registered {
		for _, id := range claimsOf[host] {
			out.also = append(out.also, pending{aggregateType: domain.AggregateClaim, aggregateID: id,
				events: []domain.Event{domain.ClaimTaken{Claim: id, Owner: host}}, expect: claims[id].expect()})
		}
	}
	return out, registered, nil
}

// importProbeScript reads, as the deploy user and without writing, how
// the instances it is given (pairs: service name, deploy directory) run:
// a systemd unit of tiup's, a pid file, and whether systemd runs here.
const importProbeScript = `
while [ $# -ge 2 ]; do
  svc=$1 dir=$2; shift 2
  u=no p=no
  [ -f "/etc/systemd/system/$svc.service" ] && u=yes
  [ -f "$dir/scripts/$svc.pid" ] && p=yes
  echo "instance $svc unit=$u pid=$p"
done
if [ -d /run/systemd/system ]; then echo "systemd yes"; else echo "systemd no"; fi
`

// probeImportHosts reads each new host's SSH host key (to pin it), logs in
// to every host with the import's key as the deploy user, and reads how
// the instances run; the service manager is then what the hosts say,
// unless the request named it. A host that does not answer, a key that
// does not log in and a changed host key are refused, naming the host.
func (s *Service) probeImportHosts(ctx context.Context, p *importPrep) error {
	errs := make([]error, len(p.hosts))
	found := make([]map[string]string, len(p.hosts)) // instance service name → "systemd", "none" or ""
	systemd := make([]bool, len(p.hosts))
	sem := make(chan struct{}, importProbeParallel)
	var wg sync.WaitGroup
	for i := range p.hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				errs[i] = domain.Errorf(domain.Unavailable, "the request ended before host %s was checked", p.hosts[i].host)
				return
			}
			found[i], systemd[i], errs[i] = s.probeImportHost(ctx, p, &p.hosts[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	if p.req.ServiceManager != "" {
		p.serviceManager = p.req.ServiceManager
		return nil
	}
	// As found: one service manager for every instance.
	var kinds []string
	for i, h := range p.hosts {
		for _, in := range p.meta.Parsed.Instances {
			if in.Host != h.host {
				continue
			}
			svc := string(in.Role) + "-" + strconv.Itoa(in.Port)
			how := found[i][svc]
			if how == domain.ServiceManagerSystemd && !systemd[i] {
				how = "" // a unit file where systemd does not run
			}
			if how == "" {
				return domain.Errorf(domain.Invalid, "cannot tell how %s %s runs: host %s has no systemd unit /etc/systemd/system/%s.service (with systemd running) and no pid file %s/scripts/%s.pid; give service_manager (%s or %s)",
					in.Role, in.ID, h.host, svc, in.DeployDir, svc, domain.ServiceManagerSystemd, domain.ServiceManagerNone)
			}
			if !slices.Contains(kinds, how) {
				kinds = append(kinds, how)
			}
		}
	}
	if len(kinds) != 1 {
		return domain.Errorf(domain.Invalid, "the instances run under different service managers (%s): dmgr runs a cluster under one; give service_manager", strings.Join(kinds, " and "))
	}
	p.serviceManager = kinds[0]
	return nil
}

// probeImportHost checks one host (see probeImportHosts) and returns how
// each of its instances runs, and whether systemd runs there.
func (s *Service) probeImportHost(ctx context.Context, p *importPrep, h *importHost) (map[string]string, bool, error) {
	addr := net.JoinHostPort(h.address, strconv.Itoa(h.port))
	if !h.registered {
		if s.scanHostKey == nil {
			return nil, false, domain.Errorf(domain.Invalid, "this server cannot read host keys itself: register host %s with POST /api/v1/machines first", h.host)
		}
		sctx, cancel := context.WithTimeout(ctx, scanTimeout)
		key, err := s.scanHostKey(sctx, h.address, h.port)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, false, domain.Errorf(domain.Unavailable, "the request ended before host %s answered", h.host)
			}
			return nil, false, domain.Errorf(domain.Unreachable, "host %s does not answer on its SSH port %s (%s): check that it is up and reachable from dmgr, then import again",
				h.host, addr, scanProblem(err))
		}
		if h.hostKey, err = s.pinHostKey(ctx, key, h.address, h.port); err != nil {
			return nil, false, err
		}
	}
	var args []string
	for _, in := range p.meta.Parsed.Instances {
		if in.Host == h.host {
			args = append(args, string(in.Role)+"-"+strconv.Itoa(in.Port), in.DeployDir)
		}
	}
	t := remote.Target{Host: h.address, Port: h.port, User: p.meta.User, PrivateKey: p.key, HostKey: h.hostKey.Key}
	lctx, cancel := context.WithTimeout(ctx, importLoginTimeout)
	defer cancel()
	cmd := domain.ShellJoin(append([]string{"sh", "-c", importProbeScript, "sh"}, args...)...)
	res, err := s.login(lctx, t, cmd, remote.RunOptions{}, importLoginTimeout)
	var mismatch *remote.HostKeyMismatchError
	switch {
	case err == nil && res.ExitCode != 0:
		return nil, false, domain.Errorf(domain.Unreachable, "host %s: the check as user %s failed (exit %d): %s", h.host, p.meta.User, res.ExitCode, lastLine(res.Stderr))
	case err == nil:
	case errors.Is(err, remote.ErrLoginRefused):
		return nil, false, domain.Errorf(domain.Invalid, "ssh_key does not log in to host %s as user %s: the host refused it; give the cluster's key (~/.tiup/storage/dm/clusters/<name>/ssh/id_rsa)",
			h.host, p.meta.User)
	case errors.As(err, &mismatch):
		return nil, false, domain.Errorf(domain.Conflict, "host %s does not offer the SSH host key pinned when machine %s was registered (%s): if it was reinstalled, remove and register the machine again",
			h.host, h.host, h.hostKey.Fingerprint)
	case ctx.Err() != nil:
		return nil, false, domain.Errorf(domain.Unavailable, "the request ended before host %s answered", h.host)
	default:
		return nil, false, domain.Errorf(domain.Unreachable, "host %s does not answer the login as user %s on %s: %s", h.host, p.meta.User, addr, loginProblem(err))
	}
	how := map[string]string{}
	systemd := false
	sc := bufio.NewScanner(strings.NewReader(res.Stdout))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "systemd":
			systemd = f[1] == "yes"
		case len(f) == 4 && f[0] == "instance":
			switch {
			case f[2] == "unit=yes":
				how[f[1]] = domain.ServiceManagerSystemd
			case f[3] == "pid=yes":
				how[f[1]] = domain.ServiceManagerNone
			}
		}
	}
	return how, systemd, nil
}

// loginProblem is a failed login's reason, without the address (the
// message names it already).
func loginProblem(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, ": run: "); i >= 0 {
		msg = msg[i+len(": run: "):]
	}
	return msg
}

// lastLine is the last non-empty line of s (at most 300 bytes).
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return cmp.Or(s, "no message")
}
