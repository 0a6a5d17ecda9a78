package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dmgr/dmgr/domain"
)

// Live statuses of an instance, as `tiup dm display` shows them.
const (
	LiveUp          = "Up"
	LiveUpLeader    = "Up|Leader"
	LiveDown        = "Down"        // the host answers, the instance does not
	LiveUnreachable = "Unreachable" // the host does not answer
	// LiveNotStarted: dmgr never started the instance (its deploy or
	// scale-out has not reached its start step), so it is not probed.
	LiveNotStarted = "N/A"
)

// LiveInstance is one instance as probed now.
type LiveInstance struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	Role      domain.Role `json:"role"`
	Host      string      `json:"host"`
	Port      int         `json:"port"`
	Status    string      `json:"status"`
	Version   string      `json:"version,omitempty"`
	Stage     string      `json:"stage,omitempty"`  // dm-worker: free, bound, offline
	Source    string      `json:"source,omitempty"` // dm-worker: the bound source
	DeployDir string      `json:"deploy_dir"`
	DataDir   string      `json:"data_dir"`
	Error     string      `json:"error,omitempty"` // why it is Down or Unreachable
}

// LiveCluster is a cluster with its instances probed now.
type LiveCluster struct {
	Name      string         `json:"name"`
	Version   string         `json:"version"`
	Status    string         `json:"status"`
	Instances []LiveInstance `json:"instances"`
	ProbedAt  time.Time      `json:"probed_at"`
}

// liveProbeTimeout bounds each probe of an instance.
const liveProbeTimeout = 2 * time.Second

// LiveCluster probes every instance of a cluster the way DM's own tools
// do: GET /status on masters and workers (version), the health route of
// the monitoring, and dm-master's members API for the leader and each
// worker's stage and bound source.
//
// It connects only to instances dmgr placed (started at least once, see
// placed), at the address recorded for their machine when it was
// registered and the port of the instance; the HTTP client dials nothing
// else, follows no redirect and uses no proxy. A user's topology alone can
// therefore not make the server probe an address or port.
func (s *Service) LiveCluster(ctx context.Context, name string) (LiveCluster, error) {
	c, err := s.Cluster(ctx, name)
	if err != nil {
		return LiveCluster{}, err
	}
	addrs, err := s.machineAddrs(ctx, c.Instances)
	if err != nil {
		return LiveCluster{}, err
	}
	targets := map[string]bool{}
	out := LiveCluster{Name: c.Name, Version: c.Version, Status: c.Status, Instances: make([]LiveInstance, len(c.Instances)), ProbedAt: s.now().UTC()}
	probe := make([]string, len(c.Instances)) // host:port to probe, "" for none
	for i, in := range c.Instances {
		out.Instances[i] = LiveInstance{ID: in.ID, Name: in.Name, Role: in.Role, Host: in.Host, Port: in.Port,
			DeployDir: in.DeployDir, DataDir: in.DataDir}
		li := &out.Instances[i]
		switch a := addrs[in.Host]; {
		case !placed(in):
			li.Status, li.Error = LiveNotStarted, "dmgr has not started this instance yet; it is not probed"
		case a == "":
			li.Status, li.Error = LiveUnreachable, "its machine "+in.Host+" has no recorded address (not registered, or registered by name before dmgr recorded addresses); it is not probed"
		default:
			probe[i] = net.JoinHostPort(a, strconv.Itoa(in.Port))
			targets[probe[i]] = true
		}
	}
	client := probeClient(targets)
	var wg sync.WaitGroup
	for i, in := range c.Instances {
		if probe[i] == "" {
			continue
		}
		wg.Add(1)
		go func(li *LiveInstance, role domain.Role, addr string) {
			defer wg.Done()
			probeInstance(ctx, client, li, role, addr)
		}(&out.Instances[i], in.Role, probe[i])
	}
	wg.Wait()
	var masters []string
	for i, in := range c.Instances {
		if in.Role == domain.RoleMaster && probe[i] != "" {
			masters = append(masters, probe[i])
		}
	}
	members, err := membersOf(ctx, client, masters)
	if err == nil {
		for i := range out.Instances {
			li := &out.Instances[i]
			if li.Status != LiveUp {
				continue
			}
			switch li.Role {
			case domain.RoleMaster:
				if li.Name == members.leader {
					li.Status = LiveUpLeader
				}
			case domain.RoleWorker:
				if w, ok := members.workers[li.Name]; ok {
					li.Stage, li.Source = w.Stage, w.Source
				}
			}
		}
	}
	return out, nil
}

// placed reports whether dmgr started the instance at least once (its
// start step succeeded; a stop step since leaves it down, still placed).
func placed(in domain.Instance) bool {
	return in.Status == domain.InstanceStatusUp || in.Status == domain.InstanceStatusDown
}

// machineAddrs returns the recorded address of each instance's machine
// ("" when it has none).
func (s *Service) machineAddrs(ctx context.Context, instances []domain.Instance) (map[string]string, error) {
	out := map[string]string{}
	for _, in := range instances {
		if _, done := out[in.Host]; done {
			continue
		}
		m, err := s.loadMachine(ctx, in.Host)
		if err != nil {
			return nil, err
		}
		out[in.Host] = ""
		if m.state.Active() {
			out[in.Host] = m.state.Addr()
		}
	}
	return out, nil
}

// errNotATarget is the error of a dial the probe client refuses.
var errNotATarget = errors.New("not an instance of the cluster: not probed")

// probeClient is an HTTP client that connects only to targets (host:port
// with the host an IP address), follows no redirect and uses no proxy.
func probeClient(targets map[string]bool) *http.Client {
	dialer := &net.Dialer{Timeout: liveProbeTimeout}
	return &http.Client{
		Timeout: liveProbeTimeout,
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if !targets[addr] || (network != "tcp" && network != "tcp4" && network != "tcp6") {
					return nil, errNotATarget
				}
				return dialer.DialContext(ctx, network, addr)
			},
			DisableKeepAlives:      true,
			ResponseHeaderTimeout:  liveProbeTimeout,
			MaxResponseHeaderBytes: 64 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

var healthPaths = map[domain.Role]string{
	domain.RoleMaster: "/status", domain.RoleWorker: "/status", domain.RolePrometheus: "/-/ready",
	domain.RoleAlertmanager: "/-/ready", domain.RoleGrafana: "/api/health",
}

func probeInstance(ctx context.Context, client *http.Client, li *LiveInstance, role domain.Role, addr string) {
	body, err := get(ctx, client, "http://"+addr+healthPaths[role])
	if err != nil {
		li.Status, li.Error = classifyProbe(err), err.Error()
		return
	}
	li.Status = LiveUp
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "Release Version: "); ok {
			li.Version = strings.TrimSpace(v)
		}
	}
}

// classifyProbe tells an instance that is down (its host refuses the
// connection, or answers with an error) from a host that does not answer.
func classifyProbe(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" && !op.Timeout() && strings.Contains(op.Err.Error(), "refused") {
		return LiveDown
	}
	if strings.HasPrefix(err.Error(), "status ") {
		return LiveDown
	}
	return LiveUnreachable
}

func get(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return string(b), nil
}

type liveMembers struct {
	leader  string
	workers map[string]struct{ Stage, Source string }
}

// membersOf asks the masters (host:port), one after another, for the
// members.
func membersOf(ctx context.Context, client *http.Client, masters []string) (liveMembers, error) {
	var last error = errors.New("the cluster has no dm-master dmgr started")
	for _, addr := range masters {
		body, err := get(ctx, client, "http://"+addr+"/apis/v1alpha1/members?leader=true&master=true&worker=true")
		if err != nil {
			last = err
			continue
		}
		var resp struct {
			Members []struct {
				Leader *struct{ Name string } `json:"leader"`
				Worker *struct {
					Workers []struct{ Name, Stage, Source string } `json:"workers"`
				} `json:"worker"`
			} `json:"members"`
		}
		if err := json.Unmarshal([]byte(body), &resp); err != nil {
			last = err
			continue
		}
		m := liveMembers{workers: map[string]struct{ Stage, Source string }{}}
		for _, mem := range resp.Members {
			if mem.Leader != nil {
				m.leader = mem.Leader.Name
			}
			if mem.Worker != nil {
				for _, w := range mem.Worker.Workers {
					m.workers[w.Name] = struct{ Stage, Source string }{w.Stage, w.Source}
				}
			}
		}
		return m, nil
	}
	return liveMembers{}, last
}
