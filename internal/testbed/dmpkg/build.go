package dmpkg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dmgr/dmgr/internal/pkgstore"
)

const (
	modulePath = "github.com/dmgr/dmgr"
	simCommand = "./internal/testbed/dmsim/cmd/dmsim"
	versionVar = modulePath + "/internal/testbed/dmsim.Version"
	// buildTimeout bounds one go build, which runs on after the callers
	// that wait for it give up (they share it).
	buildTimeout = 10 * time.Minute
)

// FileName is the name of the package file for version: dm-<version>.tar.gz.
func FileName(version string) string { return "dm-" + version + ".tar.gz" }

// Build compiles the simulator for linux/GOARCH (the arch this process runs
// on; CGO_ENABLED=0, -trimpath, -ldflags "-s -w -X …dmsim.Version=<version>")
// and writes dm-<version>.tar.gz in the seed-000 layout into dir (created
// if missing), returning its path. version is v<major>.<minor>.<patch> with
// an optional -suffix, as pkgstore.ParseName reads it. Build needs the go
// tool on PATH and the dmgr source tree.
func Build(ctx context.Context, version, dir string) (string, error) {
	return BuildFor(ctx, version, runtime.GOARCH, dir)
}

// BuildFor is Build for linux/goarch (amd64 or arm64, the arches dmgr takes).
func BuildFor(ctx context.Context, version, goarch, dir string) (string, error) {
	b, err := tarball(ctx, version, goarch)
	if err != nil {
		return "", err
	}
	return writeFile(dir, FileName(version), func(w io.Writer) error {
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("dmpkg: write %s: %w", filepath.Join(dir, FileName(version)), err)
		}
		return nil
	})
}

// writeFile writes dir/name (dir created if missing) through write, into a
// temporary file renamed into place once complete, so that a reader never
// sees half a package; it returns the path. write's error is returned as
// it is.
func writeFile(dir, name string, write func(w io.Writer) error) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("dmpkg: %w", err)
	}
	dst := filepath.Join(dir, name)
	tmp, err := os.CreateTemp(dir, ".dm-*.tar.gz")
	if err != nil {
		return "", fmt.Errorf("dmpkg: %w", err)
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := write(bw); err != nil {
		tmp.Close()
		return "", err
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("dmpkg: write %s: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("dmpkg: write %s: %w", dst, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", fmt.Errorf("dmpkg: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("dmpkg: %w", err)
	}
	return dst, nil
}

// checkVersion refuses a version that would not make a package name
// pkgstore accepts (and so could not reach -ldflags safely either).
func checkVersion(version string) error {
	name, v, err := pkgstore.ParseName(FileName(version))
	if err != nil || name != "dm" || v != version {
		return fmt.Errorf("dmpkg: version %q: want v<major>.<minor>.<patch>[-suffix], like v8.1.0", version)
	}
	return nil
}

func checkArch(goarch string) error {
	switch goarch {
	case "amd64", "arm64":
		return nil
	}
	return fmt.Errorf("dmpkg: arch %q: dmgr takes packages for amd64 or arm64", goarch)
}

// The process-wide build cache: Build and Package share one build per
// version and arch, and concurrent callers wait for the same one. It is a
// package variable because it caches for the whole test process; failed
// builds are not kept, so a later call tries again.
var (
	cacheMu sync.Mutex
	cache   = map[[2]string]*buildCall{}
	// builds counts compiles, for tests.
	builds atomic.Int32
)

type buildCall struct {
	done chan struct{}
	b    []byte
	err  error
}

// tarball returns the package bytes for version and goarch, building them
// at most once at a time per process.
func tarball(ctx context.Context, version, goarch string) ([]byte, error) {
	if err := checkVersion(version); err != nil {
		return nil, err
	}
	if err := checkArch(goarch); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dmpkg: build %s: %w", FileName(version), err)
	}
	key := [2]string{version, goarch}
	cacheMu.Lock()
	c := cache[key]
	if c == nil {
		c = &buildCall{done: make(chan struct{})}
		cache[key] = c
		go func() {
			bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), buildTimeout)
			defer cancel()
			c.b, c.err = buildTarball(bctx, version, goarch)
			if c.err != nil {
				cacheMu.Lock()
				delete(cache, key)
				cacheMu.Unlock()
			}
			close(c.done)
		}()
	}
	cacheMu.Unlock()
	select {
	case <-c.done:
		return c.b, c.err
	case <-ctx.Done():
		return nil, fmt.Errorf("dmpkg: build %s: %w", FileName(version), ctx.Err())
	}
}

// buildTarball compiles the simulator into a temp dir and packs it.
func buildTarball(ctx context.Context, version, goarch string) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "dmpkg-")
	if err != nil {
		return nil, fmt.Errorf("dmpkg: %w", err)
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "dmsim")
	if err := compile(ctx, version, goarch, bin); err != nil {
		return nil, err
	}
	sim, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("dmpkg: %w", err)
	}
	return pack(sim)
}

// compile runs go build for the simulator command from the module root.
func compile(ctx context.Context, version, goarch, out string) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	builds.Add(1)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-s -w -X "+versionVar+"="+version, "-o", out, simCommand)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+goarch, "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("dmpkg: go build %s for linux/%s in %s: %w\n%s", simCommand, goarch, root, err, b)
	}
	return nil
}

// moduleRoot finds the dmgr source tree: from this file's path when the
// binary was built from source without -trimpath (tests), else from
// `go env GOMOD` in the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		for dir := filepath.Dir(file); ; dir = filepath.Dir(dir) {
			if isModule(filepath.Join(dir, "go.mod")) {
				return dir, nil
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && isModule(gomod) {
			return filepath.Dir(gomod), nil
		}
	}
	if errors.Is(err, exec.ErrNotFound) {
		return "", errors.New("dmpkg: the go tool is not on PATH; building the simulator needs it")
	}
	return "", fmt.Errorf("dmpkg: cannot find the source of module %s: run from inside its tree (building the simulator needs it)", modulePath)
}

// isModule reports whether gomod is the go.mod of the dmgr module.
func isModule(gomod string) bool {
	b, err := os.ReadFile(gomod)
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == modulePath
		}
	}
	return false
}
