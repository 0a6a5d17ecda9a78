package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dmgr/dmgr/internal/leadership"
)

// etcd keys (package leadership): an agent's online key lives under its
// lease and disappears when the agent stops or dies; its seen key stays,
// so that the platform can show it offline.

// registryTimeout bounds each etcd request of the registration.
const registryTimeout = 5 * time.Second

// Info describes an agent as it registered.
type Info struct {
	ID        string    `json:"id"`
	Pool      string    `json:"pool"`
	Hostname  string    `json:"hostname"`
	PID       int       `json:"pid"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	Online    bool      `json:"online"`
}

// register writes the agent's keys: online under a lease kept alive until
// ctx ends, seen without one. It returns when the lease is lost or ctx
// ends; the error says which.
func register(ctx context.Context, cli *clientv3.Client, info Info, ttl time.Duration) (lost <-chan struct{}, revoke func(), err error) {
	// The grant and the writes get a deadline; the keepalive lasts with ctx.
	rctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	lease, err := cli.Grant(rctx, int64(ttl/time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("agent %s: etcd lease: %w", info.ID, err)
	}
	info.Online = false
	seen, _ := json.Marshal(info)
	info.Online = true
	online, _ := json.Marshal(info)
	if _, err := cli.Txn(rctx).Then(
		clientv3.OpPut(leadership.AgentSeenKey(info.ID), string(seen)),
		clientv3.OpPut(leadership.AgentOnlineKey(info.ID), string(online), clientv3.WithLease(lease.ID)),
	).Commit(); err != nil {
		return nil, nil, fmt.Errorf("agent %s: register in etcd: %w", info.ID, err)
	}
	keep, err := cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return nil, nil, fmt.Errorf("agent %s: etcd keepalive: %w", info.ID, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range keep {
		}
	}()
	revoke = func() {
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, _ = cli.Revoke(rctx, lease.ID)
	}
	return done, revoke, nil
}

// List returns every agent that ever registered, online ones first, then
// by id.
func List(ctx context.Context, cli *clientv3.Client) ([]Info, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, registryTimeout)
		defer cancel()
	}
	seen, err := cli.Get(ctx, leadership.AgentsSeenPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	online, err := cli.Get(ctx, leadership.AgentsOnlinePrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	isOnline := map[string]bool{}
	for _, kv := range online.Kvs {
		if id, ok := leadership.AgentID(string(kv.Key)); ok {
			isOnline[id] = true
		}
	}
	out := make([]Info, 0, len(seen.Kvs))
	for _, kv := range seen.Kvs {
		var in Info
		if err := json.Unmarshal(kv.Value, &in); err != nil {
			return nil, fmt.Errorf("list agents: key %s: %w", kv.Key, err)
		}
		in.Online = isOnline[in.ID]
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Online != out[j].Online {
			return out[i].Online
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}
