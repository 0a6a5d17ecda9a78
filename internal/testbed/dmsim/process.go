package dmsim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// openLog opens the log file (creating its directory) or stderr if path is "".
func openLog(path string) (zerolog.Logger, func(), error) {
	if path == "" {
		return zerolog.New(os.Stderr).With().Timestamp().Logger(), func() {}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return zerolog.Logger{}, nil, fmt.Errorf("create log dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return zerolog.Logger{}, nil, fmt.Errorf("open log file: %w", err)
	}
	return zerolog.New(f).With().Timestamp().Logger(), func() { f.Close() }, nil
}

// writeStartMarker writes <dir>/started-<unix-nanos> so tests can count starts.
func writeStartMarker(dir string, now time.Time) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	name := filepath.Join(dir, "started-"+strconv.FormatInt(now.UnixNano(), 10))
	if err := os.WriteFile(name, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("write start marker: %w", err)
	}
	return nil
}

// startMarkers counts the start markers in dir.
func startMarkers(dir string) int {
	des, _ := os.ReadDir(dir)
	n := 0
	for _, de := range des {
		if strings.HasPrefix(de.Name(), "started-") {
			n++
		}
	}
	return n
}

func listenAll(addrs []string) ([]net.Listener, error) {
	var lns []net.Listener
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listen on %s: %w", a, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// serve serves h on lns until ctx ends, then shuts down gracefully.
func serve(ctx context.Context, lns []net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errc <- srv.Serve(ln) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func statusHandler(version string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, StatusText(version))
	}
}

// postJSON posts in to url and decodes the answer into out (if not nil).
func postJSON(ctx context.Context, c *http.Client, url string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s", url, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// waitStartDelay sleeps d (sim-start-delay, see StartDelayKey) unless ctx
// ends first, and reports whether ctx ended.
func waitStartDelay(ctx context.Context, d time.Duration, logger zerolog.Logger, program, name string) (stopped bool) {
	if d <= 0 {
		return false
	}
	logger.Info().Str("name", name).Dur("delay", d).Msg(program + " delays its start (" + StartDelayKey + ")")
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		logger.Info().Str("name", name).Int("pid", os.Getpid()).Msg(program + " stopped during its start delay")
		return true
	case <-t.C:
		return false
	}
}
