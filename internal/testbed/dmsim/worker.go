package dmsim

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// heartbeatInterval is how often a worker registers with (heartbeats to) a master.
const heartbeatInterval = time.Second

// RunWorker runs a simulated dm-worker until ctx ends. It serves GET /status
// and registers with one of the --join masters, retrying each second.
func RunWorker(ctx context.Context, cfg WorkerConfig) error {
	cfg, err := cfg.normalize()
	if err != nil {
		return fmt.Errorf("dm-worker: %w", err)
	}
	logger, closeLog, err := openLog(cfg.LogFile)
	if err != nil {
		return fmt.Errorf("dm-worker %s: %w", cfg.Name, err)
	}
	defer closeLog()
	version := cfg.Version
	if version == "" {
		version = CurrentVersion()
	}
	dataDir := cfg.DataDir
	if dataDir == "" && cfg.LogFile != "" {
		dataDir = filepath.Dir(cfg.LogFile)
	}
	now := time.Now()
	if err := writeStartMarker(dataDir, now); err != nil {
		return fmt.Errorf("dm-worker %s: %w", cfg.Name, err)
	}
	if waitStartDelay(ctx, cfg.StartDelay, logger, "dm-worker", cfg.Name) {
		return nil
	}
	lns, err := listenAll([]string{cfg.WorkerAddr})
	if err != nil {
		logger.Error().Err(err).Str("name", cfg.Name).Msg("dm-worker failed to start")
		return fmt.Errorf("dm-worker %s: %w", cfg.Name, err)
	}
	for _, f := range cfg.Ignored {
		logger.Warn().Str("flag", f).Msg("ignoring unknown flag")
	}
	logger.Info().Str("name", cfg.Name).Str("version", version).Str("worker_addr", cfg.WorkerAddr).
		Str("advertise_addr", cfg.AdvertiseAddr).Str("join", cfg.Join).Int("pid", os.Getpid()).Msg("dm-worker started")

	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", statusHandler(version))

	var g sync.WaitGroup
	g.Go(func() { heartbeat(ctx, cfg, now.UnixNano(), logger) })
	err = serve(ctx, lns, mux)
	g.Wait()
	if err != nil {
		logger.Error().Err(err).Msg("dm-worker stopped on error")
		return fmt.Errorf("dm-worker %s: %w", cfg.Name, err)
	}
	logger.Info().Str("name", cfg.Name).Int("pid", os.Getpid()).Msg("dm-worker stopped")
	return nil
}

// heartbeat registers with the first --join master that answers and keeps
// doing so every second, moving to another master when that one stops answering.
func heartbeat(ctx context.Context, cfg WorkerConfig, instance int64, logger zerolog.Logger) {
	client := &http.Client{Timeout: 500 * time.Millisecond}
	req := workerHeartbeat{Name: cfg.Name, Addr: cfg.AdvertiseAddr, Instance: instance}
	masters := splitList(cfg.Join)
	current := -1
	for {
		ok := false
		for i := range masters {
			idx := (max(current, 0) + i) % len(masters)
			var res apiResult
			if err := postJSON(ctx, client, "http://"+clientAddr(masters[idx])+"/sim/v1/workers", req, &res); err != nil {
				continue
			}
			if idx != current {
				logger.Info().Str("master", masters[idx]).Msg("registered with dm-master")
			}
			current, ok = idx, true
			break
		}
		if !ok && current != -2 {
			logger.Warn().Str("join", cfg.Join).Msg("no dm-master answers; retrying every second")
			current = -2
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(heartbeatInterval):
		}
	}
}
