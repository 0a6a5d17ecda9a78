// Command testsummary runs `go test -json` with the arguments it is given,
// prints what a person needs from the run — each package's result, the
// whole output of every failed test, the reason of every skipped test —
// and ends with one line "N passed, N failed, N skipped", so that a green
// run can never hide a skipped suite. It exits non-zero when go test does.
//
//	go run ./internal/testsummary -count=1 -timeout 20m ./...
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	cmd := exec.Command("go", append([]string{"test", "-json"}, os.Args[1:]...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary: start go test:", err)
		os.Exit(2)
	}
	s := newSummary(os.Stdout)
	if err := s.read(out); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary: read go test output:", err)
	}
	runErr := cmd.Wait()
	s.finish()
	if runErr != nil || s.failed > 0 {
		var exit *exec.ExitError
		if errors.As(runErr, &exit) {
			os.Exit(exit.ExitCode())
		}
		os.Exit(1)
	}
}

type summary struct {
	w                       io.Writer
	passed, failed, skipped int
	output                  map[string][]string // "pkg test" → its output lines, until it ends
	skips                   []string
	failures                []string
}

func newSummary(w io.Writer) *summary { return &summary{w: w, output: map[string][]string{}} }

func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(s.w, sc.Text()) // not test2json: a build error, say
			continue
		}
		s.add(e)
	}
	return sc.Err()
}

func (s *summary) add(e event) {
	key := e.Package + " " + e.Test
	switch e.Action {
	case "output":
		if e.Test == "" {
			// Package-level lines: its ok/FAIL line and anything printed
			// outside a test (build failures, panics in TestMain).
			if line := strings.TrimRight(e.Output, "\n"); line != "" && !strings.HasPrefix(line, "=== ") &&
				!strings.HasPrefix(line, "PASS") && !strings.HasPrefix(line, "coverage:") {
				fmt.Fprintln(s.w, line)
			}
			return
		}
		s.output[key] = append(s.output[key], e.Output)
	case "pass":
		if e.Test != "" {
			s.passed++
			delete(s.output, key)
		}
	case "skip":
		if e.Test != "" {
			s.skipped++
			s.skips = append(s.skips, fmt.Sprintf("%s %s: %s", e.Package, e.Test, skipReason(s.output[key])))
			delete(s.output, key)
		}
	case "fail":
		if e.Test != "" {
			s.failed++
			s.failures = append(s.failures, key)
			fmt.Fprintf(s.w, "--- FAIL: %s (%s, %.1fs)\n%s", e.Test, e.Package, e.Elapsed, strings.Join(s.output[key], ""))
			delete(s.output, key)
		}
	}
}

// skipReason is the message a skipped test logged, without go test's
// framing lines.
func skipReason(lines []string) string {
	var msg []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		msg = append(msg, t)
	}
	if len(msg) == 0 {
		return "(no reason given)"
	}
	return strings.Join(msg, " ")
}

func (s *summary) finish() {
	if len(s.skips) > 0 {
		sort.Strings(s.skips)
		fmt.Fprintf(s.w, "\nskipped tests (%d):\n", len(s.skips))
		for _, l := range s.skips {
			fmt.Fprintln(s.w, "  "+l)
		}
	}
	if len(s.failures) > 0 {
		fmt.Fprintf(s.w, "\nfailed tests (%d):\n", len(s.failures))
		for _, l := range s.failures {
			fmt.Fprintln(s.w, "  "+l)
		}
	}
	fmt.Fprintf(s.w, "\n%d passed, %d failed, %d skipped\n", s.passed, s.failed, s.skipped)
}
