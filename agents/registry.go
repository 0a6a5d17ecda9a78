package agents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/rs/zerolog"
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

// register writes the agent's keys: online under a new lease, kept alive
// until ctx ends, and seen without one. lost is closed when the lease is
// lost (expired, revoked) or ctx ends.
func register(ctx context.Context, cli *clientv3.Client, info Info, ttl time.Duration) (lost <-chan struct{}, lease clientv3.LeaseID, err error) {
	// The grant and the writes get a deadline; the keepalive lasts with ctx.
	rctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	grant, err := cli.Grant(rctx, max(1, int64(ttl/time.Second)))
	if err != nil {
		return nil, 0, fmt.Errorf("agent %s: etcd lease: %w", info.ID, err)
	}
	info.Online = false
	seen, _ := json.Marshal(info)
	info.Online = true
	online, _ := json.Marshal(info)
	if _, err := cli.Txn(rctx).Then(
		clientv3.OpPut(leadership.AgentSeenKey(info.ID), string(seen)),
		clientv3.OpPut(leadership.AgentOnlineKey(info.ID), string(online), clientv3.WithLease(grant.ID)),
	).Commit(); err != nil {
		revoke(cli, grant.ID)
		return nil, 0, fmt.Errorf("agent %s: register in etcd: %w", info.ID, err)
	}
	keep, err := cli.KeepAlive(ctx, grant.ID)
	if err != nil {
		revoke(cli, grant.ID)
		return nil, 0, fmt.Errorf("agent %s: etcd keepalive: %w", info.ID, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range keep {
		}
	}()
	return done, grant.ID, nil
}

// revoke revokes a lease, best effort: the agent's online key goes with it.
func revoke(cli *clientv3.Client, lease clientv3.LeaseID) {
	rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = cli.Revoke(rctx, lease)
}

// keepRegistered keeps the agent registered until ctx ends: when its lease
// is lost (etcd expired it during a partition, or someone revoked it) it
// registers again under a new lease, with a jittered backoff. It fails
// when registering has failed for longer than giveUp, or at once when the
// etcd client is closed: an agent that cannot show itself online must not
// look alive. registered is called after every registration.
func keepRegistered(ctx context.Context, cli *clientv3.Client, info Info, ttl, giveUp time.Duration, log zerolog.Logger,
	registered func(clientv3.LeaseID)) error {
	var failingSince time.Time
	for n := 0; ctx.Err() == nil; {
		lost, lease, err := register(ctx, cli, info, ttl)
		if err == nil {
			if !failingSince.IsZero() || n > 0 {
				log.Info().Int64("lease", int64(lease)).Msg("agent registered again in etcd")
			}
			failingSince, n = time.Time{}, 0
			if registered != nil {
				registered(lease)
			}
			select {
			case <-lost:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				revoke(cli, lease)
				return nil
			}
			log.Warn().Int64("lease", int64(lease)).Msg("etcd lease lost: the agent shows offline; registering again")
			n = 1 // the first try again waits a little: the lease may be gone with etcd
			sleep(ctx, registerRetryMin)
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if cerr := cli.Ctx().Err(); cerr != nil {
			return fmt.Errorf("agent %s: etcd client closed: %w", info.ID, errors.Join(err, cerr))
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
		}
		if time.Since(failingSince) >= giveUp {
			return fmt.Errorf("agent %s: not registered in etcd for %s: %w", info.ID, time.Since(failingSince).Round(time.Second), err)
		}
		n++
		wait := registerBackoff(n)
		log.Warn().Err(err).Int("tries", n).Dur("retry_in", wait).Msg("register the agent in etcd")
		sleep(ctx, wait)
	}
	return nil
}

// The backoff between tries of a registration: from registerRetryMin,
// doubled per failure, capped at registerRetryMax, the upper half jittered.
const (
	registerRetryMin = 200 * time.Millisecond
	registerRetryMax = 5 * time.Second
)

func registerBackoff(n int) time.Duration {
	d := registerRetryMax
	if n < 32 {
		if b := registerRetryMin << (n - 1); b > 0 && b < registerRetryMax {
			d = b
		}
	}
	return d/2 + rand.N(d/2+1)
}

// List returns up to limit agents that ever registered, in the order of
// their ids, after the agent whose id is after ("" starts at the first),
// each marked online when its lease is alive; next is the id to pass as
// after for the following page, "" on the last one. A page reads two
// bounded etcd ranges whatever the number of agents.
func List(ctx context.Context, cli *clientv3.Client, after string, limit int) (list []Info, next string, err error) {
	if limit < 1 {
		return nil, "", fmt.Errorf("list agents: limit %d: want at least 1", limit)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, registryTimeout)
		defer cancel()
	}
	from := leadership.AgentsSeenPrefix
	if after != "" {
		from = leadership.AgentSeenKey(after) + "\x00"
	}
	seen, err := cli.Get(ctx, from, clientv3.WithRange(clientv3.GetPrefixRangeEnd(leadership.AgentsSeenPrefix)),
		clientv3.WithLimit(int64(limit)+1))
	if err != nil {
		return nil, "", fmt.Errorf("list agents: %w", err)
	}
	kvs := seen.Kvs
	if len(kvs) > limit {
		kvs = kvs[:limit]
	}
	list = make([]Info, 0, len(kvs))
	for _, kv := range kvs {
		id, ok := leadership.AgentID(string(kv.Key))
		if !ok {
			return nil, "", fmt.Errorf("list agents: key %s is not an agent's", kv.Key)
		}
		var in Info
		if err := json.Unmarshal(kv.Value, &in); err != nil {
			return nil, "", fmt.Errorf("list agents: key %s: %w", kv.Key, err)
		}
		in.ID = id
		list = append(list, in)
	}
	if len(list) == 0 {
		return list, "", nil
	}
	// The online keys of the agents on this page: one range from the first
	// to the last, keys only.
	online, err := cli.Get(ctx, leadership.AgentOnlineKey(list[0].ID),
		clientv3.WithRange(leadership.AgentOnlineKey(list[len(list)-1].ID)+"\x00"), clientv3.WithKeysOnly())
	if err != nil {
		return nil, "", fmt.Errorf("list agents: %w", err)
	}
	isOnline := make(map[string]bool, len(online.Kvs))
	for _, kv := range online.Kvs {
		if id, ok := leadership.AgentID(string(kv.Key)); ok {
			isOnline[id] = true
		}
	}
	for i := range list {
		list[i].Online = isOnline[list[i].ID]
	}
	if len(seen.Kvs) > limit {
		next = list[len(list)-1].ID
	}
	return list, next, nil
}
