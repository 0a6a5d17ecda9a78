package dmsim

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// probeInterval is how often a master exchanges state with its peers; a peer
// that does not answer is not alive and cannot be leader.
const probeInterval = 500 * time.Millisecond

type master struct {
	cfg      MasterConfig
	version  string
	log      zerolog.Logger
	client   *http.Client
	instance int64

	mu    sync.Mutex
	st    simState
	alive map[string]bool
}

// RunMaster runs a simulated dm-master until ctx ends.
func RunMaster(ctx context.Context, cfg MasterConfig) error {
	cfg, err := cfg.normalize()
	if err != nil {
		return fmt.Errorf("dm-master: %w", err)
	}
	logger, closeLog, err := openLog(cfg.LogFile)
	if err != nil {
		return fmt.Errorf("dm-master %s: %w", cfg.Name, err)
	}
	defer closeLog()
	version := cfg.Version
	if version == "" {
		version = CurrentVersion()
	}
	now := time.Now()
	if err := writeStartMarker(cfg.DataDir, now); err != nil {
		return fmt.Errorf("dm-master %s: %w", cfg.Name, err)
	}
	initial, err := parseInitialCluster(cfg.InitialCluster)
	if err != nil {
		return fmt.Errorf("dm-master %s: %w", cfg.Name, err)
	}
	if n := startMarkers(cfg.DataDir); cfg.FailStarts > 0 && n <= cfg.FailStarts {
		logger.Error().Str("name", cfg.Name).Int("start", n).Msg("dm-master failed to start (" + FailStartsKey + ")")
		return fmt.Errorf("dm-master %s: start %d of the %d that fail (%s)", cfg.Name, n, cfg.FailStarts, FailStartsKey)
	}
	if waitStartDelay(ctx, cfg.StartDelay, logger, "dm-master", cfg.Name) {
		return nil
	}
	addrs := []string{cfg.MasterAddr}
	for _, u := range splitList(cfg.PeerURLs) {
		h, _ := hostOfURL(u)
		if !slices.Contains(addrs, h) {
			addrs = append(addrs, h)
		}
	}
	lns, err := listenAll(addrs)
	if err != nil {
		logger.Error().Err(err).Str("name", cfg.Name).Msg("dm-master failed to start")
		return fmt.Errorf("dm-master %s: %w", cfg.Name, err)
	}

	m := &master{cfg: cfg, version: version, log: logger, instance: now.UnixNano(),
		client: &http.Client{Timeout: 400 * time.Millisecond}, st: newState(), alive: map[string]bool{}}
	for name, urls := range initial {
		if name != cfg.Name {
			m.st.Masters[name] = simMaster{Name: name, PeerURLs: urls}
		}
	}
	m.st.Masters[cfg.Name] = simMaster{Name: cfg.Name, Addr: cfg.AdvertiseAddr,
		PeerURLs: splitList(cfg.AdvertisePeerURLs), Instance: m.instance}

	for _, f := range cfg.Ignored {
		logger.Warn().Str("flag", f).Msg("ignoring unknown flag")
	}
	logger.Info().Str("name", cfg.Name).Str("version", version).Str("master_addr", cfg.MasterAddr).
		Str("advertise_addr", cfg.AdvertiseAddr).Str("peer_urls", cfg.PeerURLs).
		Str("initial_cluster", cfg.InitialCluster).Str("join", cfg.Join).Bool("openapi", cfg.OpenAPI).
		Int("pid", os.Getpid()).Msg("dm-master started")

	var g sync.WaitGroup
	g.Go(func() {
		if cfg.Join != "" {
			m.joinLoop(ctx)
		}
		m.gossipLoop(ctx)
	})
	err = serve(ctx, lns, m.routes())
	g.Wait()
	if err != nil {
		logger.Error().Err(err).Msg("dm-master stopped on error")
		return fmt.Errorf("dm-master %s: %w", cfg.Name, err)
	}
	logger.Info().Str("name", cfg.Name).Int("pid", os.Getpid()).Msg("dm-master stopped")
	return nil
}

func (m *master) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", statusHandler(m.version))
	mux.HandleFunc("GET /apis/v1alpha1/members", m.handleListMembers)
	mux.HandleFunc("DELETE /apis/v1alpha1/members/master/{name}", m.handleOfflineMaster)
	mux.HandleFunc("DELETE /apis/v1alpha1/members/worker/{name}", m.handleOfflineWorker)
	mux.HandleFunc("GET /sim/v1/state", m.handleGetState)
	mux.HandleFunc("POST /sim/v1/state", m.handleExchangeState)
	mux.HandleFunc("POST /sim/v1/join", m.handleJoin)
	mux.HandleFunc("POST /sim/v1/workers", m.handleWorkerHeartbeat)
	if m.cfg.OpenAPI {
		mux.HandleFunc("GET /api/v1/cluster/masters", m.handleOpenAPIMasters)
		mux.HandleFunc("GET /api/v1/cluster/workers", m.handleOpenAPIWorkers)
		mux.HandleFunc("DELETE /api/v1/cluster/masters/{name}", m.handleOpenAPIOffline(true))
		mux.HandleFunc("DELETE /api/v1/cluster/workers/{name}", m.handleOpenAPIOffline(false))
	}
	return mux
}

// ---- membership exchange between masters ----

type joinRequest struct {
	Name     string   `json:"name"`
	Addr     string   `json:"addr"`
	PeerURLs []string `json:"peer_urls"`
	Instance int64    `json:"instance"`
}

func (m *master) snapshot() simState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.clone()
}

func (m *master) mergeState(o simState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st.merge(o)
}

// joinLoop announces this master to one of the --join masters, retrying
// every second until one answers.
func (m *master) joinLoop(ctx context.Context) {
	req := joinRequest{Name: m.cfg.Name, Addr: m.cfg.AdvertiseAddr, PeerURLs: splitList(m.cfg.AdvertisePeerURLs), Instance: m.instance}
	for {
		for _, a := range splitList(m.cfg.Join) {
			a = clientAddr(a)
			if a == m.cfg.AdvertiseAddr {
				continue
			}
			var st simState
			if err := postJSON(ctx, m.client, "http://"+a+"/sim/v1/join", req, &st); err != nil {
				m.log.Warn().Err(err).Str("master", a).Msg("join failed")
				continue
			}
			m.mergeState(st)
			m.log.Info().Str("master", a).Msg("joined cluster")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (m *master) gossipLoop(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		m.exchangeAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// exchangeAll sends this master's state to every other visible master and
// merges their answers; whoever answers is alive.
func (m *master) exchangeAll(ctx context.Context) {
	st := m.snapshot()
	var wg sync.WaitGroup
	var amu sync.Mutex
	alive := map[string]bool{}
	for name, pm := range st.Masters {
		if name == m.cfg.Name || !st.masterVisible(pm) {
			continue
		}
		target := ""
		if pm.Addr != "" {
			target = "http://" + pm.Addr
		} else if len(pm.PeerURLs) > 0 {
			target = strings.TrimSuffix(pm.PeerURLs[0], "/")
		} else {
			continue
		}
		wg.Go(func() {
			var got simState
			err := postJSON(ctx, m.client, target+"/sim/v1/state", st, &got)
			amu.Lock()
			alive[name] = err == nil
			amu.Unlock()
			if err == nil {
				m.mergeState(got)
			}
		})
	}
	wg.Wait()
	m.mu.Lock()
	m.alive = alive
	m.mu.Unlock()
}

func (m *master) handleGetState(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, m.snapshot())
}

func (m *master) handleExchangeState(w http.ResponseWriter, r *http.Request) {
	var in simState
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, "bad state: "+err.Error(), http.StatusBadRequest)
		return
	}
	in = fillMaps(in)
	m.mergeState(in)
	writeJSON(w, http.StatusOK, m.snapshot())
}

func fillMaps(s simState) simState {
	n := newState()
	n.merge(s)
	return n
}

func (m *master) handleJoin(w http.ResponseWriter, r *http.Request) {
	var in joinRequest
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Name == "" || in.Addr == "" {
		http.Error(w, "bad join request: want {name, addr, peer_urls}", http.StatusBadRequest)
		return
	}
	if in.Instance == 0 {
		in.Instance = time.Now().UnixNano()
	}
	st := newState()
	st.Masters[in.Name] = simMaster{Name: in.Name, Addr: in.Addr, PeerURLs: in.PeerURLs, Instance: in.Instance}
	m.mergeState(st)
	m.log.Info().Str("member", in.Name).Str("addr", in.Addr).Msg("master joined")
	m.pushAll(r.Context())
	writeJSON(w, http.StatusOK, m.snapshot())
}

type workerHeartbeat struct {
	Name     string `json:"name"`
	Addr     string `json:"addr"`
	Instance int64  `json:"instance"`
}

func (m *master) handleWorkerHeartbeat(w http.ResponseWriter, r *http.Request) {
	var in workerHeartbeat
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Name == "" || in.Addr == "" {
		http.Error(w, "bad worker registration: want {name, addr}", http.StatusBadRequest)
		return
	}
	m.mu.Lock()
	cur, known := m.st.Workers[in.Name]
	isNew := !known || in.Instance > cur.Instance
	if isNew || in.Instance == cur.Instance {
		m.st.Workers[in.Name] = simWorker{Name: in.Name, Addr: in.Addr, Instance: in.Instance, LastSeen: time.Now().UnixNano()}
	}
	visible := m.st.workerVisible(m.st.Workers[in.Name])
	m.mu.Unlock()
	if isNew {
		m.log.Info().Str("worker", in.Name).Str("addr", in.Addr).Msg("worker registered")
		m.pushAll(r.Context())
	}
	if !visible {
		writeJSON(w, http.StatusOK, apiResult{Result: false, Msg: "dm-worker " + in.Name + " was taken offline"})
		return
	}
	writeJSON(w, http.StatusOK, apiResult{Result: true})
}

// pushAll spreads a change to the other masters at once rather than at the
// next probe, so a caller that asks another master next sees it.
func (m *master) pushAll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 500*time.Millisecond)
	defer cancel()
	m.exchangeAll(ctx)
}

// ---- views ----

type masterView struct {
	Name     string
	Addr     string
	PeerURLs []string
	Alive    bool
}

type workerView struct {
	Name, Addr, Stage string
}

// view returns the visible masters and workers sorted by name and the leader:
// the alive master with the smallest name.
func (m *master) view() (masters []masterView, workers []workerView, leader *masterView) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now().UnixNano()
	for name, pm := range m.st.Masters {
		if !m.st.masterVisible(pm) {
			continue
		}
		masters = append(masters, masterView{Name: name, Addr: pm.Addr, PeerURLs: pm.PeerURLs,
			Alive: name == m.cfg.Name || m.alive[name]})
	}
	for name, w := range m.st.Workers {
		if !m.st.workerVisible(w) {
			continue
		}
		stage := "free"
		if time.Duration(now-w.LastSeen) > workerOfflineAfter {
			stage = "offline"
		}
		workers = append(workers, workerView{Name: name, Addr: w.Addr, Stage: stage})
	}
	slices.SortFunc(masters, func(a, b masterView) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(workers, func(a, b workerView) int { return strings.Compare(a.Name, b.Name) })
	for i := range masters {
		if masters[i].Alive && masters[i].Addr != "" {
			leader = &masters[i]
			break
		}
	}
	return masters, workers, leader
}

// ---- gRPC-gateway routes (/apis/v1alpha1) ----

type apiResult struct {
	Result bool   `json:"result"`
	Msg    string `json:"msg"`
}

type listMemberResponse struct {
	Result  bool      `json:"result"`
	Msg     string    `json:"msg"`
	Members []members `json:"members"`
}

type members struct {
	Leader *listLeaderMember `json:"leader,omitempty"`
	Master *listMasterMember `json:"master,omitempty"`
	Worker *listWorkerMember `json:"worker,omitempty"`
}

type listLeaderMember struct {
	Msg  string `json:"msg"`
	Name string `json:"name"`
	Addr string `json:"addr"`
}

type listMasterMember struct {
	Msg     string       `json:"msg"`
	Masters []masterInfo `json:"masters"`
}

type masterInfo struct {
	Name       string   `json:"name"`
	MemberID   string   `json:"memberID"` // uint64, a string in proto3 JSON
	Alive      bool     `json:"alive"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
}

type listWorkerMember struct {
	Msg     string       `json:"msg"`
	Workers []workerInfo `json:"workers"`
}

type workerInfo struct {
	Name   string `json:"name"`
	Addr   string `json:"addr"`
	Stage  string `json:"stage"`
	Source string `json:"source"`
}

func memberID(name string, peerURLs []string) string {
	h := fnv.New64a()
	h.Write([]byte(name + "|" + strings.Join(peerURLs, ",")))
	return strconv.FormatUint(h.Sum64(), 10)
}

func (m *master) handleListMembers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	wantLeader, wantMaster, wantWorker := q.Get("leader") == "true", q.Get("master") == "true", q.Get("worker") == "true"
	if !wantLeader && !wantMaster && !wantWorker {
		wantLeader, wantMaster, wantWorker = true, true, true
	}
	var names []string
	for _, n := range q["names"] {
		names = append(names, splitList(n)...)
	}
	keep := func(n string) bool { return len(names) == 0 || slices.Contains(names, n) }

	masters, workers, leader := m.view()
	resp := listMemberResponse{Result: true, Members: []members{}}
	if wantLeader {
		l := &listLeaderMember{}
		if leader != nil {
			l.Name, l.Addr = leader.Name, leader.Addr
		} else {
			l.Msg = "no leader"
		}
		resp.Members = append(resp.Members, members{Leader: l})
	}
	if wantMaster {
		lm := &listMasterMember{Masters: []masterInfo{}}
		for _, mv := range masters {
			if !keep(mv.Name) {
				continue
			}
			mi := masterInfo{Name: mv.Name, MemberID: memberID(mv.Name, mv.PeerURLs), Alive: mv.Alive,
				PeerURLs: append([]string{}, mv.PeerURLs...), ClientURLs: []string{}}
			if mv.Addr != "" {
				mi.ClientURLs = []string{"http://" + mv.Addr}
			}
			lm.Masters = append(lm.Masters, mi)
		}
		resp.Members = append(resp.Members, members{Master: lm})
	}
	if wantWorker {
		lw := &listWorkerMember{Workers: []workerInfo{}}
		for _, wv := range workers {
			if keep(wv.Name) {
				lw.Workers = append(lw.Workers, workerInfo{Name: wv.Name, Addr: wv.Addr, Stage: wv.Stage})
			}
		}
		resp.Members = append(resp.Members, members{Worker: lw})
	}
	writeJSON(w, http.StatusOK, resp)
}

// offline removes a master or worker; it returns a DM-like message if the
// member does not exist.
func (m *master) offline(ctx context.Context, isMaster bool, name string) error {
	m.mu.Lock()
	if isMaster {
		pm, ok := m.st.Masters[name]
		if !ok || !m.st.masterVisible(pm) {
			m.mu.Unlock()
			return fmt.Errorf("dm-master with name %s not exists", name)
		}
		m.st.RemovedMasters[name] = max(m.st.RemovedMasters[name], pm.Instance)
	} else {
		wk, ok := m.st.Workers[name]
		if !ok || !m.st.workerVisible(wk) {
			m.mu.Unlock()
			return fmt.Errorf("dm-worker with name %s not exists", name)
		}
		m.st.RemovedWorkers[name] = max(m.st.RemovedWorkers[name], wk.Instance)
	}
	m.mu.Unlock()
	m.log.Info().Str("member", name).Bool("master", isMaster).Msg("member taken offline")
	m.pushAll(ctx)
	return nil
}

func (m *master) handleOfflineMaster(w http.ResponseWriter, r *http.Request) {
	m.writeOffline(w, r, true)
}

func (m *master) handleOfflineWorker(w http.ResponseWriter, r *http.Request) {
	m.writeOffline(w, r, false)
}

func (m *master) writeOffline(w http.ResponseWriter, r *http.Request, isMaster bool) {
	if err := m.offline(r.Context(), isMaster, r.PathValue("name")); err != nil {
		writeJSON(w, http.StatusOK, apiResult{Result: false, Msg: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, apiResult{Result: true})
}

// ---- DM OpenAPI (/api/v1), only with openapi = true ----

type openAPIList[T any] struct {
	Total int `json:"total"`
	Data  []T `json:"data"`
}

type clusterMaster struct {
	Name   string `json:"name"`
	Alive  bool   `json:"alive"`
	Leader bool   `json:"leader"`
	Addr   string `json:"addr"`
}

type clusterWorker struct {
	Name            string `json:"name"`
	Addr            string `json:"addr"`
	BoundStage      string `json:"bound_stage"`
	BoundSourceName string `json:"bound_source_name"`
}

type openAPIError struct {
	ErrorMsg  string `json:"error_msg"`
	ErrorCode int    `json:"error_code"`
}

func (m *master) handleOpenAPIMasters(w http.ResponseWriter, r *http.Request) {
	masters, _, leader := m.view()
	out := openAPIList[clusterMaster]{Data: []clusterMaster{}}
	for _, mv := range masters {
		out.Data = append(out.Data, clusterMaster{Name: mv.Name, Alive: mv.Alive,
			Leader: leader != nil && leader.Name == mv.Name, Addr: mv.Addr})
	}
	out.Total = len(out.Data)
	writeJSON(w, http.StatusOK, out)
}

func (m *master) handleOpenAPIWorkers(w http.ResponseWriter, r *http.Request) {
	_, workers, _ := m.view()
	out := openAPIList[clusterWorker]{Data: []clusterWorker{}}
	for _, wv := range workers {
		out.Data = append(out.Data, clusterWorker{Name: wv.Name, Addr: wv.Addr, BoundStage: wv.Stage})
	}
	out.Total = len(out.Data)
	writeJSON(w, http.StatusOK, out)
}

func (m *master) handleOpenAPIOffline(isMaster bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := m.offline(r.Context(), isMaster, r.PathValue("name")); err != nil {
			writeJSON(w, http.StatusBadRequest, openAPIError{ErrorMsg: err.Error(), ErrorCode: 46001})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}
