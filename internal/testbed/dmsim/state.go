package dmsim

import "time"

// simState is the membership a master knows and gossips to its peers. Every
// entry carries the start time (Instance, unix nanos) of the process it
// describes; a newer instance replaces an older one, and a removal is a
// tombstone naming the newest instance removed, so a restarted member with
// the same name comes back while the removed process stays gone.
type simState struct {
	Masters        map[string]simMaster `json:"masters"`
	Workers        map[string]simWorker `json:"workers"`
	RemovedMasters map[string]int64     `json:"removed_masters"`
	RemovedWorkers map[string]int64     `json:"removed_workers"`
}

type simMaster struct {
	Name     string   `json:"name"`
	Addr     string   `json:"addr"` // client address; "" until known
	PeerURLs []string `json:"peer_urls"`
	Instance int64    `json:"instance"`
}

type simWorker struct {
	Name     string `json:"name"`
	Addr     string `json:"addr"`
	Instance int64  `json:"instance"`
	LastSeen int64  `json:"last_seen"` // unix nanos of the last heartbeat
}

// workerOfflineAfter is how long a worker may miss heartbeats before its
// stage turns "offline".
const workerOfflineAfter = 5 * time.Second

func newState() simState {
	return simState{Masters: map[string]simMaster{}, Workers: map[string]simWorker{},
		RemovedMasters: map[string]int64{}, RemovedWorkers: map[string]int64{}}
}

func (s *simState) clone() simState {
	c := newState()
	c.merge(*s)
	return c
}

func (s *simState) merge(o simState) {
	for n, t := range o.RemovedMasters {
		if cur, ok := s.RemovedMasters[n]; !ok || t > cur {
			s.RemovedMasters[n] = t
		}
	}
	for n, t := range o.RemovedWorkers {
		if cur, ok := s.RemovedWorkers[n]; !ok || t > cur {
			s.RemovedWorkers[n] = t
		}
	}
	for n, om := range o.Masters {
		cur, ok := s.Masters[n]
		if !ok || om.Instance > cur.Instance || (om.Instance == cur.Instance && cur.Addr == "" && om.Addr != "") {
			om.PeerURLs = append([]string(nil), om.PeerURLs...)
			s.Masters[n] = om
		}
	}
	for n, ow := range o.Workers {
		cur, ok := s.Workers[n]
		if !ok || ow.Instance > cur.Instance || (ow.Instance == cur.Instance && ow.LastSeen > cur.LastSeen) {
			s.Workers[n] = ow
		}
	}
}

func (s *simState) masterVisible(m simMaster) bool {
	t, removed := s.RemovedMasters[m.Name]
	return !removed || m.Instance > t
}

func (s *simState) workerVisible(w simWorker) bool {
	t, removed := s.RemovedWorkers[w.Name]
	return !removed || w.Instance > t
}
